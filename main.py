"""voxseg's one entry point: train, test or profile a model from a YAML recipe.

examples:
  python main.py --config scannet_tr.yaml
  python main.py --config demo.yaml
  python main.py --config demo.yaml train.optimizer.lr=0.02 data.voxel_size=0.05
  python main.py --config demo.yaml --print-config
  python main.py --config demo.yaml --mode test --weights outputs/demo/run1/best.pth
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

from lib.config import ConfigError, dump_config, load_config, resolve_config_path
from lib.errors import UserError


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="main.py",
        description="Train, test or profile a 3D semantic segmentation model from a YAML recipe.",
        epilog="overrides: any recipe key as dotted key=value after the options, parsed to the key's\n"
               "declared type, e.g. train.optimizer.lr=0.02 data.voxel_size=0.05\n\n"
               + __doc__.split("\n", 2)[2],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", required=True, help="recipe: a path, or a name inside config/ (e.g. demo.yaml)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="recipe overrides")
    parser.add_argument("--mode", choices=("train", "test", "profile"), default="train",
                        help="train (default), test (predict + evaluate + export), or profile (memory)")
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


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        budget = [f"data.memory_budget={args.budget}"] if args.budget else []
        cfg = load_config(args.config, args.overrides + budget)
        config_path = resolve_config_path(args.config)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.print_config:
        print(dump_config(cfg), end="")
        return 0
    if args.mode == "test" and args.weights is None:
        print("error: --mode test needs --weights <checkpoint>", file=sys.stderr)
        return 2
    if args.output_dir is None:
        if args.resume:
            print("error: --resume needs --output-dir (the run folder to continue)", file=sys.stderr)
            return 2
        args.output_dir = default_output_dir(str(config_path))
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
        return launch(cfg, args, build_dataset=build_dataset, build_model=models.build_model, collate_fn=collate_fn)
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
