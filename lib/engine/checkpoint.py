"""Checkpoints: atomic writes, weights-only loading, and RNG state capture.

A checkpoint is a dict of tensors and primitive containers only, so `torch.load(...,
weights_only=True)` can read it:
  {"format": FORMAT_VERSION, "model", "optimizer", "scheduler", "scaler", "ema", "iteration", "rng",
   "config", "best", "best_iteration", "world_size"}
"""
import os
import random
import tempfile
from pathlib import Path

import numpy as np
import torch

from lib.errors import UserError, naming_disk_full

FORMAT_VERSION = 1


def atomic_write(path, write, mode: str = "wb") -> None:
    """Call `write(f)` on a temporary file in `path`'s folder, then os.replace it onto `path`,
    so a reader (or a crash) never sees a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with naming_disk_full(path), os.fdopen(fd, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_save(obj, path) -> None:
    """torch.save `obj` to `path` atomically (see `atomic_write`)."""
    atomic_write(path, lambda f: torch.save(obj, f))


class CheckpointError(UserError, RuntimeError):
    """A checkpoint is missing, unreadable, or not one of ours (one-line message naming the file)."""


def load_checkpoint(path, map_location="cpu") -> dict:
    """Read a checkpoint with weights_only=True; raises one line naming the file on failure."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # corrupt file, or a pickle that is not weights-only
        raise CheckpointError(f"{path}: cannot load as a weights-only checkpoint "
                           f"({type(exc).__name__}: {str(exc).splitlines()[0]})") from exc
    if not isinstance(ckpt, dict) or "model" not in ckpt:
        raise CheckpointError(f"{path}: not a voxseg checkpoint (no 'model' entry)")
    return ckpt


def model_state(ckpt: dict) -> dict:
    """The weights to evaluate: the EMA average when the checkpoint has one."""
    if ckpt.get("ema"):
        return ckpt["ema"]["module"]
    return ckpt["model"]


def capture_rng() -> dict:
    """RNG states of python, numpy, torch CPU and every CUDA device, as tensors/primitives."""
    py_version, py_state, py_gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state = {
        "python": {"version": py_version, "state": list(py_state), "gauss": py_gauss},
        "numpy": {"name": np_name, "keys": torch.from_numpy(np_keys.astype(np.int64)),
                  "pos": int(np_pos), "has_gauss": int(np_has_gauss), "gauss": float(np_gauss)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict) -> None:
    """Inverse of `capture_rng`. CUDA states are restored when both sides have CUDA."""
    py = state["python"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss"]))
    npst = state["numpy"]
    np.random.set_state((npst["name"], npst["keys"].numpy().astype(np.uint32), npst["pos"],
                         npst["has_gauss"], npst["gauss"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = state["cuda"][: torch.cuda.device_count()]
        torch.cuda.set_rng_state_all(cuda_states)
