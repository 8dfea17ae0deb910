"""Entry of the engine: `launch` (main.py's handoff, re-running itself in N processes when asked)
and `run` (one process: setup, the mode's runner from lib/engine/modes/, `<run>/summary.json`).

main.py calls `launch(cfg, args, build_dataset=..., build_model=..., collate_fn=..., train_collate_fn=...,
build_scans=...)` (`train_collate_fn`: an optional training collate; the voxel cap itself is kept by
the engine, lib/engine/voxel_budget.py, and evaluation never defers a scene; `build_scans`: predict
mode's reader of new scans, datasets.scans.ScanDataset); with
`--nproc N` (or dist.nproc > 1) outside torchrun it re-runs main.py in N processes through
torch.distributed.run.
"""
import importlib
import json
import logging
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from lib.engine import dist as D
from lib.engine.inputs import InputMaker
from lib.engine.precision import precision_name
from lib.engine.process import process
from lib.engine.signals import check_signal
from lib.io import atomic_write_json

log = logging.getLogger("voxseg")

MODES = ("train", "test", "predict", "profile")  # each runs lib.engine.modes.<module>.run(run)
_MODE_MODULES = {"train": "train", "test": "evaluate", "predict": "predict", "profile": "profile"}


@dataclass
class RunContext:
    """Everything a mode needs; built once per process and passed to a mode as `run`."""
    cfg: object
    mode: str
    run_dir: Path
    device: torch.device
    rank: int
    world: int
    build_dataset: Callable  # (data_cfg, split) -> dataset
    build_model: Callable  # (model_cfg, in_channels, num_classes) -> nn.Module
    collate_fn: Callable
    make_input: Callable  # (batch, device[, input_type]) -> model input; lib.engine.inputs.InputMaker
    weights: str = ""
    resume: bool = False
    train_collate_fn: Callable = None  # the training loader's collate; None: collate_fn
    oom_guard: object = None  # lib.profiler.oom_guard's guard around the mode (None in tests' own contexts)
    inputs: tuple = ()  # --mode predict: the scan files / folders
    build_scans: Callable = None  # (inputs, model card, cfg) -> dataset of those scans (predict)
    config_given: bool = True  # False: the recipe came from the checkpoint (predict without --config)
    summary_extra: dict = None  # the mode's own summary.json entries (train: best/final validation)

    def watch_model(self, model) -> None:
        """Let the out-of-memory report name the tensors `model`'s modules make."""
        if self.oom_guard is not None:
            self.oom_guard.watch(model)


def summary_metrics(scores) -> dict:
    """The summary's `metrics` block from an evaluator score dict (None -> nulls)."""
    if not scores:
        return {"miou": None, "macc": None, "allacc": None, "per_class_iou": {}}
    return {"miou": scores["mIoU"], "macc": scores["mAcc"], "allacc": scores["allAcc"],
            "per_class_iou": {name: v["iou"] for name, v in scores["per_class"].items()}}


def run(cfg, mode: str, run_dir, build_dataset, build_model, collate_fn, weights="", resume=False,
        make_input=None, train_collate_fn=None, allow_config_change=False, inputs=(), build_scans=None,
        config_given=True) -> dict:
    """Run one mode in this process (already one of N under torchrun, or alone).
    Returns the summary dict (also written to <run>/summary.json by rank 0). `resume`: True,
    False, or "auto" (resume when <run>/last.pth exists: what a torchrun restart needs).

    A resume first compares the recipe with the run folder's config.yaml (lib/config/resume.py):
    run-changing differences stop it unless `allow_config_change`, which records them."""
    from lib.config import config_to_dict, save_config
    from lib.config.resume import check_resume_config, record_changes

    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r} ({'|'.join(MODES)})")
    with process(cfg, run_dir) as (device, rank, world, run_dir):
        if resume == "auto":  # decided by rank 0, so every rank agrees
            resume = bool(D.broadcast_object((run_dir / "last.pth").is_file()))
            log.info("--resume auto: %s", f"resuming from {run_dir / 'last.pth'}" if resume
                     else f"no {run_dir / 'last.pth'} yet, starting fresh")
        changed = check_resume_config(run_dir, config_to_dict(cfg), allow_config_change) if resume else {}
        if rank == 0:
            if changed:
                record_changes(run_dir, changed)
                log.warning("resuming with a changed recipe (recorded in %s): %s", run_dir / "config_changes.json",
                            ", ".join(changed))
            save_config(cfg, run_dir / "config.yaml")
        context = RunContext(cfg, mode, run_dir, device, rank, world, build_dataset, build_model, collate_fn,
                             make_input or InputMaker(cfg.engine, cfg.data.voxel_size), str(weights or ""),
                             resume, train_collate_fn, inputs=tuple(inputs), build_scans=build_scans,
                             config_given=config_given)
        log.info("%s run in %s: %d process(es), device %s, engine %s", mode, run_dir, world,
                 device, cfg.engine)
        for note in getattr(cfg, "notes", ()):  # overrides that replaced a recipe key (lib/config/shadows.py)
            log.warning("%s", note)
        start = time.perf_counter()
        runner = importlib.import_module(f"lib.engine.modes.{_MODE_MODULES[mode]}")
        if mode == "profile":  # the profile mode runs its own guard, at its report depth
            scores, iterations = runner.run(context)
        else:
            from lib.profiler import oom_guard
            # An out-of-memory error writes <run>/oom_report.json, then reaches the user unchanged.
            with oom_guard(run_dir, rank=rank) as context.oom_guard:
                scores, iterations = runner.run(context)
        summary = {"mode": mode, "iterations": iterations,
                   "elapsed_s": round(time.perf_counter() - start, 3),
                   "metrics": summary_metrics(scores),
                   "convention": scores.get("convention") if scores else None,
                   "precision": precision_name(cfg.train.amp, device)}  # forwards' precision (train.amp)
        for key, value in (context.summary_extra or {}).items():
            summary[key] = summary_metrics(value) if key.endswith("_metrics") else value
        if rank == 0:
            atomic_write_json(run_dir / "summary.json", summary)
            log.info("summary: %s", json.dumps(summary["metrics"] | {"per_class_iou": "..."}))
        return summary


# What a run folder holds before its run made anything: a folder with only these is not kept.
SETUP_FILES = {"config.yaml", "log.txt"}


def discard_unused_run_dir(run_dir: Path) -> bool:
    """Remove `run_dir` (made by a run that failed before producing anything: a missing dataset, a
    bad model argument) when it holds only SETUP_FILES, so no empty run is left among the real
    ones; the error itself was printed. Returns whether it was removed."""
    if not run_dir.is_dir() or any(p.name not in SETUP_FILES for p in run_dir.iterdir()):
        return False
    for p in run_dir.iterdir():
        p.unlink()
    run_dir.rmdir()
    return True


def _argv_for_workers(argv: list, run_dir: Path) -> list:
    """The script's argv without --nproc, with the run folder pinned so every rank agrees."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        if a == "--nproc" or a == "--output-dir":
            skip = True
            continue
        if a.startswith("--nproc=") or a.startswith("--output-dir="):
            continue
        out.append(a)
    return out + ["--output-dir", str(run_dir)]


def launch(cfg, args, build_dataset, build_model, collate_fn, train_collate_fn=None, build_scans=None) -> int:
    """main.py's handoff. Returns the process exit code."""
    nproc = args.nproc if args.nproc is not None else cfg.dist.nproc
    if nproc > 1 and not D.launched_by_torchrun():
        script = os.path.abspath(sys.argv[0])  # main.py, or whatever script called launch()
        return D.launch_local(script, _argv_for_workers(sys.argv[1:], args.output_dir), nproc,
                              cfg.dist.master_port)
    fresh = not Path(args.output_dir).exists()
    try:
        run(cfg, args.mode, args.output_dir, build_dataset, build_model, collate_fn,
            weights=args.weights, resume=args.resume, train_collate_fn=train_collate_fn,
            allow_config_change=getattr(args, "allow_config_change", False), inputs=getattr(args, "input", None) or (),
            build_scans=build_scans, config_given=getattr(args, "config", None) is not None)
    except Exception:
        if fresh and os.environ.get("RANK", "0") == "0":
            discard_unused_run_dir(Path(args.output_dir))
        raise
    check_signal()  # a SIGTERM after the run's last safe point still stops it (143, lib/engine/signals.py)
    return 0
