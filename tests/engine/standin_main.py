"""main.py with the stand-in dataset and model: the same launch path (including --nproc through
torch.distributed.run, or under torchrun), for the engine's multi-process tests.

    python tests/engine/standin_main.py --mode train --output-dir D [--nproc 2] [key=value ...]
"""
import argparse
import copy
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root

from tests.engine import standins  # noqa: E402
from lib.config.loader import apply_overrides  # noqa: E402
from lib.config.schema import Config  # noqa: E402
from lib.config.validate import build_dataclass  # noqa: E402
from lib.engine.launch import launch  # noqa: E402


BASE = {
    "device": "cpu", "engine": "torch",
    "data": {"batch_size": 2, "num_workers": 0},
    "train": {"iterations": 6, "val_every": 0, "ckpt_every": 3, "log_every": 1, "progress": False,
              "optimizer": {"lr": 0.1}},
    "export": {"ply": False},
    "eval": {"plots": False},
}


def config(overrides: list) -> Config:
    """The stand-in recipe with `key=value` overrides, parsed as main.py parses them."""
    data, sources = copy.deepcopy(BASE), {}
    raws = apply_overrides(data, sources, list(overrides))
    return build_dataclass(Config, data, sources, "", raws)


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
