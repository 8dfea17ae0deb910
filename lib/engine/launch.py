"""Entry of the engine: process setup (device, process group, seeds, run folder, log file),
the run modes, and `<run>/summary.json`.

main.py calls `launch(cfg, args, build_dataset=..., build_model=..., collate_fn=..., train_collate_fn=...)`
(the training loader's collate may enforce a voxel cap; evaluation never defers a scene); with
`--nproc N` (or dist.nproc > 1) outside torchrun it re-runs main.py in N processes through
torch.distributed.run.
"""
import json
import logging
import os
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from lib.engine import dist as D
from lib.engine.checkpoint import atomic_write

log = logging.getLogger("voxseg")


@dataclass
class RunContext:
    """Everything a mode needs; built once per process."""
    cfg: object
    mode: str
    run_dir: Path
    device: torch.device
    rank: int
    world: int
    build_dataset: Callable
    build_model: Callable
    collate_fn: Callable
    make_input: Callable  # (collated batch, device) -> model input
    weights: str = ""
    resume: bool = False
    train_collate_fn: Callable = None  # the training loader's collate; None: collate_fn


def sparse_input(engine: str):
    """make_input building a lib.sparse.SparseTensor on `device` with the configured engine."""
    def make_input(batch, device):
        from lib.sparse.tensor import SparseTensor
        return SparseTensor(batch["feats"].to(device, non_blocking=True),
                            batch["coords"].to(device, non_blocking=True), engine=engine)
    return make_input


class _TqdmStream(logging.StreamHandler):
    """Writes log lines through tqdm so they do not break a progress bar."""

    def emit(self, record):
        from tqdm import tqdm
        tqdm.write(self.format(record), file=sys.stderr)


def setup_logging(run_dir: Path, rank: int) -> list:
    """Rank 0 logs INFO to stderr and <run>/log.txt; other ranks log warnings only.
    Returns the handlers added (removed again at the end of the run)."""
    logger = logging.getLogger("voxseg")
    logger.setLevel(logging.INFO if rank == 0 else logging.WARNING)
    logger.propagate = False
    fmt = logging.Formatter(f"%(asctime)s [rank {rank}] %(levelname)s %(message)s", "%H:%M:%S")
    handlers = [_TqdmStream()]
    if rank == 0:
        handlers.append(logging.FileHandler(run_dir / "log.txt"))
    for h in handlers:
        h.setFormatter(fmt)
        logger.addHandler(h)
    return handlers


def write_json(obj, path: Path) -> None:
    """JSON through a temporary file and os.replace (never half-written)."""
    atomic_write(path, lambda f: json.dump(obj, f, indent=1), mode="w")


def summary_metrics(scores) -> dict:
    """The summary's `metrics` block from an evaluator score dict (None -> nulls)."""
    if not scores:
        return {"miou": None, "macc": None, "allacc": None, "per_class_iou": {}}
    return {"miou": scores["mIoU"], "macc": scores["mAcc"], "allacc": scores["allAcc"],
            "per_class_iou": {name: v["iou"] for name, v in scores["per_class"].items()}}


def run(cfg, mode: str, run_dir, build_dataset, build_model, collate_fn, weights="", resume=False,
        make_input=None, train_collate_fn=None) -> dict:
    """Run one mode in this process (already one of N under torchrun, or alone).
    Returns the summary dict (also written to <run>/summary.json by rank 0)."""
    from lib.config import save_config

    device = D.pick_device(cfg.device)
    if cfg.train.cpu_threads > 0:
        torch.set_num_threads(cfg.train.cpu_threads)
    D.init_distributed(cfg.dist, device)
    rank, world = D.get_rank(), D.get_world_size()
    run_dir = Path(D.broadcast_object(str(run_dir)))  # ranks may have computed different timestamps
    if rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
    D.barrier()
    handlers = setup_logging(run_dir, rank)
    try:
        random.seed(cfg.seed + rank)
        np.random.seed(cfg.seed + rank)
        torch.manual_seed(cfg.seed + rank)
        if rank == 0:
            save_config(cfg, run_dir / "config.yaml")
        ctx = RunContext(cfg, mode, run_dir, device, rank, world, build_dataset, build_model,
                         collate_fn, make_input or sparse_input(cfg.engine), str(weights or ""),
                         resume, train_collate_fn)
        log.info("%s run in %s: %d process(es), device %s, engine %s", mode, run_dir, world,
                 device, cfg.engine)
        start = time.perf_counter()
        iterations = 0
        if mode == "train":
            from lib.engine.train_mode import run_train
            scores, trainer = run_train(ctx)
            iterations = trainer.iteration
        elif mode == "test":
            from lib.engine.test_mode import run_test
            scores = run_test(ctx)
        elif mode == "profile":
            scores = run_profile(ctx)
        else:
            raise ValueError(f"unknown mode {mode!r} (train|test|profile)")
        summary = {"mode": mode, "iterations": iterations,
                   "elapsed_s": round(time.perf_counter() - start, 3),
                   "metrics": summary_metrics(scores),
                   "convention": scores.get("convention") if scores else None}
        if rank == 0:
            write_json(summary, run_dir / "summary.json")
            log.info("summary: %s", json.dumps(summary["metrics"] | {"per_class_iou": "..."}))
        return summary
    finally:
        logger = logging.getLogger("voxseg")
        for h in handlers:
            logger.removeHandler(h)
            h.close()
        D.cleanup()


def run_profile(ctx):
    """`--mode profile`: lib/profiler.py's memory profile of the model on the first training batch
    (the JSON lands in the run folder). Returns no scores."""
    from lib.engine.data import make_loader
    from lib.engine.state_check import load_weights
    from lib.profiler import profile_memory

    cfg = ctx.cfg
    dataset = ctx.build_dataset(cfg.data, "train")
    model = ctx.build_model(cfg.model, dataset.meta.in_channels, dataset.meta.num_classes).to(ctx.device)
    if ctx.weights:
        load_weights(model, ctx.weights, ctx.device)
    loader = make_loader(dataset, cfg.data.batch_size, 0, ctx.collate_fn, shuffle=True, seed=cfg.seed)
    profile_memory(model, next(iter(loader)), ctx.device, ctx.run_dir, cfg.profile, ctx.make_input)
    return None


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


def launch(cfg, args, build_dataset, build_model, collate_fn, train_collate_fn=None) -> int:
    """main.py's handoff. Returns the process exit code."""
    nproc = args.nproc if args.nproc is not None else cfg.dist.nproc
    if nproc > 1 and not D.launched_by_torchrun():
        script = os.path.abspath(sys.argv[0])  # main.py, or whatever script called launch()
        return D.launch_local(script, _argv_for_workers(sys.argv[1:], args.output_dir), nproc,
                              cfg.dist.master_port)
    run(cfg, args.mode, args.output_dir, build_dataset, build_model, collate_fn,
        weights=args.weights, resume=args.resume, train_collate_fn=train_collate_fn)
    return 0
