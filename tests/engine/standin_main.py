"""main.py with the stand-in dataset and model: the same launch path (including --nproc through
torch.distributed.run, or under torchrun), for the engine's multi-process tests.

    python tests/engine/standin_main.py --mode train --output-dir D [--nproc 2] [key=value ...]
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root

from tests.engine import standins  # noqa: E402
from lib.config.schema import Config  # noqa: E402
from lib.engine.launch import launch  # noqa: E402


def config(overrides: list) -> Config:
    cfg = Config()
    cfg.device, cfg.engine = "cpu", "torch"
    cfg.data.batch_size, cfg.data.num_workers = 2, 0
    cfg.train.iterations, cfg.train.val_every, cfg.train.ckpt_every = 6, 0, 3
    cfg.train.log_every, cfg.train.progress = 1, False
    cfg.train.optimizer.lr = 0.1
    cfg.export.ply = False
    cfg.eval.plots = False
    for item in overrides:  # dotted key=value, python literal values
        key, value = item.split("=", 1)
        *parents, leaf = key.split(".")
        node = cfg
        for p in parents:
            node = getattr(node, p)
        setattr(node, leaf, type(getattr(node, leaf))(eval(value)))
    return cfg


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("overrides", nargs="*")
    parser.add_argument("--mode", default="train")
    parser.add_argument("--output-dir", type=Path, required=True)
    parser.add_argument("--weights", default=None)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--nproc", type=int, default=None)
    args = parser.parse_intermixed_args()
    sys.exit(launch(config(args.overrides), args, standins.build_dataset, standins.build_model, standins.collate))
