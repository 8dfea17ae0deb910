"""voxseg's one entry point: train, test, profile a model from a YAML recipe, or predict new scans.

examples:
  python main.py --config scannet_tr.yaml
  python main.py --config demo.yaml
  python main.py --config demo.yaml train.optimizer.lr=0.02 data.voxel_size=0.05
  python main.py --config demo.yaml --print-config
  python main.py --config demo.yaml --mode test --weights outputs/demo/run1/best.pth
  python main.py --mode predict --weights outputs/demo/run1/best.pth --input scans/ lab.ply
  torchrun --nproc_per_node=4 main.py --config scannet_mink34c.yaml
  torchrun --nproc_per_node=4 --max-restarts=3 main.py --config demo.yaml --output-dir D --resume auto

Everything a run needs is in the recipe; `key=value` overrides change it for one run.
"""
from __future__ import annotations

import argparse
import errno
import sys
import time
from pathlib import Path

from lib.config import dump_config, load_config, resolve_config_path
from lib.errors import UserError


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="main.py",
        description="Train, test or profile a 3D semantic segmentation model from a YAML recipe, or "
                    "predict new scans with a trained one.",
        epilog="overrides: any recipe key as dotted key=value after the options, parsed to the key's\n"
               "declared type, e.g. train.optimizer.lr=0.02 data.voxel_size=0.05\n\n"
               + __doc__.split("\n", 2)[2],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", default=None,
                        help="recipe: a path, or a name inside config/ (e.g. demo.yaml); --mode predict "
                             "takes the checkpoint's own when left out")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="recipe overrides")
    parser.add_argument("--mode", choices=("train", "test", "predict", "profile"), default="train",
                        help="train (default), test (predict + evaluate + export a dataset split), predict "
                             "(new scans: --weights and --input), or profile (memory)")
    parser.add_argument("--input", nargs="+", type=Path, default=None, metavar="PATH",
                        help="--mode predict: point files or folders of them (.ply .npy .txt .csv .las .laz, "
                             "ScanNet _vh_clean_2.ply, SemanticKITTI .bin)")
    parser.add_argument("--output-dir", type=Path, default=None,
                        help="the run folder (default: outputs/<recipe name>/<date-time>)")
    parser.add_argument("--weights", type=Path, default=None, help="checkpoint to load the model weights from")
    parser.add_argument("--resume", action="store_true",
                        help="continue training from <output-dir>/last.pth (model, optimizer, schedule, RNG); "
                             "--resume auto: continue when last.pth exists, else start fresh (torchrun restarts)")
    parser.add_argument("--resume-auto", action="store_true", help=argparse.SUPPRESS)  # what `--resume auto` becomes
    parser.add_argument("--allow-config-change", action="store_true",
                        help="with --resume: accept overrides that change what the run trains (model, data, "
                             "voxel size, ...) and record them in <output-dir>/config_changes.json")
    parser.add_argument("--nproc", type=int, default=None,
                        help="launch N processes on this machine through torch.distributed.run (DDP)")
    parser.add_argument("--budget", default=None, metavar="SIZE",
                        help="device memory one process may use, e.g. 24GB (sets data.memory_budget): --mode "
                             "profile prints the largest data.limit_numpoints that fits it")
    parser.add_argument("--print-config", action="store_true", help="print the resolved recipe and exit")
    argv = list(sys.argv[1:] if argv is None else argv)
    # `--resume auto` / `--resume=auto` (an optional value on --resume would swallow a key=value after it)
    for i, a in enumerate(argv):
        if a == "--resume=auto" or (a == "--resume" and argv[i + 1:i + 2] == ["auto"]):
            argv[i:i + (1 if "=" in a else 2)] = ["--resume-auto"]
            break
    args = parser.parse_intermixed_args(argv)
    args.resume = "auto" if args.resume_auto else args.resume
    if args.input:  # `--input a.ply key=value`: nargs="+" also took the overrides that followed
        args.overrides += [str(p) for p in args.input if "=" in str(p) and not p.exists()]
        args.input = [p for p in args.input if not ("=" in str(p) and not p.exists())]
    return args


def default_output_dir(config: str) -> Path:
    stem = Path(config).name.removesuffix(".yaml")
    return Path("outputs") / stem / time.strftime("%Y%m%d-%H%M%S")


def one_line(exc: BaseException) -> str:
    """The message of `exc` as one line. An error from a DataLoader worker arrives with the worker's
    traceback in its message; its last line holds the original `module.Error: message`."""
    lines = [line for line in str(exc).splitlines() if line.strip()]
    if len(lines) <= 1:
        return lines[0] if lines else type(exc).__name__
    last = lines[-1]
    name, sep, rest = last.partition(": ")
    return rest if sep and "." in name and " " not in name else last


def stopped_message(exc: BaseException, output_dir: Path) -> str:
    """What to tell after SIGINT / SIGTERM: the signal and where the last checkpoint is."""
    last = output_dir / "last.pth"
    where = f"last checkpoint: {last}" if last.is_file() else f"no checkpoint written in {output_dir} yet"
    reason = str(exc) if str(exc) else "interrupted (SIGINT)"
    return f"{reason}; {where} (continue with --output-dir {output_dir} --resume)"


def check_registered_names(cfg) -> None:
    """Names looked up in registries (the config cannot import them) fail here, in one line with a
    suggestion, before any process or data is started: data.dataset, engine, eval.convention."""
    from datasets.registry import get_dataset
    from lib.metrics import resolve_convention
    from lib.sparse.engines import engine_spec

    get_dataset(cfg.data.dataset)  # also registers each dataset's name as a convention alias
    if cfg.engine != "auto":
        engine_spec(cfg.engine)
    if cfg.eval.convention != "auto":
        resolve_convention(cfg.eval.convention)


def dataset_builder(cfg):
    """build_dataset(data_cfg, split) for the engine. Items are seeded by the recipe's seed and never
    by rank, so a scene's augmentation depends only on (seed, epoch, index), not on which or how many
    processes load it (see lib/engine/data.py; tests/engine/test_rank_streams.py)."""
    import functools

    import datasets
    return functools.partial(datasets.build_dataset, seed=cfg.seed)


def check_command(args) -> str | None:
    """What is wrong with the command line before anything is loaded, or None."""
    if args.config is None and args.mode != "predict":
        return "--config is required (a recipe: a path, or a name inside config/)"
    if args.mode in ("test", "predict") and args.weights is None:
        return f"--mode {args.mode} needs --weights <checkpoint>"
    if args.mode == "predict" and not args.input:
        return "--mode predict needs --input <file or folder> [...]"
    if args.input and args.mode != "predict":
        return "--input is for --mode predict (test mode reads the recipe's test split)"
    return None


def load_run_config(args, overrides: list[str]):
    """(config, recipe path or None): the recipe named by --config, or, for predict without it, the
    recipe saved in the checkpoint (whose model card must exist: older ones need --config)."""
    if args.config is not None:
        return load_config(args.config, overrides), resolve_config_path(args.config)
    from lib.config import config_from_dict
    from lib.engine.checkpoint import load_checkpoint
    from lib.engine.model_card import check_card

    ckpt = load_checkpoint(args.weights)
    check_card(ckpt.get("card"), args.weights)
    return config_from_dict(ckpt.get("config") or {}, overrides, f"{args.weights} (its saved recipe)"), None


def scan_builder(inputs, card, cfg):
    """predict mode's dataset of new scans (datasets/scans.py: the readers preprocessing uses)."""
    from datasets.scans import ScanDataset, list_scans
    return ScanDataset(list_scans(inputs), card, cfg.data, list(cfg.predict.columns) or None)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    problem = check_command(args)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    try:
        budget = [f"data.memory_budget={args.budget}"] if args.budget else []
        cfg, config_path = load_run_config(args, args.overrides + budget)
    except UserError as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return 2
    if args.print_config:
        for note in getattr(cfg, "notes", ()):  # what the overrides replaced (lib/config/shadows.py)
            print(f"note: {note}", file=sys.stderr)
        print(dump_config(cfg), end="")
        return 0
    if args.output_dir is None:
        if args.resume:
            print("error: --resume needs --output-dir (the run folder to continue)", file=sys.stderr)
            return 2
        args.output_dir = default_output_dir(str(config_path) if config_path else "predict")
    # Heavy imports only once the command line is known good. main.py is where the generic engine
    # meets the dataset and model registries: lib/ never imports them itself.
    import models
    from datasets.collate import collate_fn
    from lib.engine.dist import WorkerFailedError, peer_failure
    from lib.engine.launch import launch
    from lib.engine.signals import Terminated, install_sigterm_handler

    install_sigterm_handler()
    build_dataset = dataset_builder(cfg)
    try:
        check_registered_names(cfg)
        # The engine keeps the voxel cap of training batches (lib/engine/voxel_budget.py; `auto` is measured
        # by the train mode, lib/engine/auto_limit.py); evaluation never defers.
        return launch(cfg, args, build_dataset=build_dataset, build_model=models.build_model, collate_fn=collate_fn,
                      build_scans=scan_builder if args.mode == "predict" else None)
    except WorkerFailedError as exc:  # --nproc: a worker killed or crashed; the launcher names it
        print(f"error: {stopped_message(exc, args.output_dir)}", file=sys.stderr)
        return exc.exitcode
    except UserError as exc:  # config, data, checkpoint, disk full: one line, no traceback
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return 2
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        where = exc.filename or f"under {args.output_dir}"  # a failed write() names no file
        print(f"error: no space left writing {where}", file=sys.stderr)
        return 2
    except RuntimeError as exc:
        lost = peer_failure(exc)  # a surviving rank of a run whose peer died: an effect, one line
        if lost is None:
            raise
        print(f"error: {lost}", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, Terminated) as exc:
        print(f"error: {stopped_message(exc, args.output_dir)}", file=sys.stderr)
        return 128 + getattr(exc, "signum", 2)


if __name__ == "__main__":
    sys.exit(main())
