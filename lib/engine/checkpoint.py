"""Checkpoints: assembled from the `state_dict()` of each piece of a training run, loaded back by the
same pieces, readable with `torch.load(..., weights_only=True)` (tensors and plain containers only).

Format 2 (FORMAT_VERSION):
  {"format": 2,
   "model": model state_dict (the key every version keeps),
   "optimizer", "scheduler": their state_dicts,
   "scaler": GradScaler state_dict or None, "ema": {"module", "updates"} or None,
   "trainer": {"iteration", "rng": [one RNG state per rank], "world_size", "skipped_total",
               "stream": [one data-stream position per rank (EpochStream / CappedStream state_dict)]},
   "hooks": {hook name: that hook's state_dict} (e.g. "validation": {"best", "best_iteration"}),
   "config": the resolved recipe as a dict,
   "card": the model card (lib/engine/model_card.py: what --mode predict needs) or None}
Format 1 (no "trainer"/"hooks"; "iteration", "rng", "world_size", "best", "best_iteration" at the
top) is migrated on load by `migrate`.
"""
import logging
import random
from pathlib import Path

import numpy as np
import torch
from torch import nn

from lib.errors import UserError
from lib.io import atomic_write

FORMAT_VERSION = 2
log = logging.getLogger("voxseg")


def atomic_save(obj, path) -> None:
    """torch.save `obj` to `path` atomically (lib.io.atomic_write). A SIGTERM meanwhile is only
    recorded (lib/engine/signals.py), so the file is always written whole."""
    atomic_write(path, lambda f: torch.save(obj, f))


class CheckpointError(UserError, RuntimeError):
    """A checkpoint is missing, unreadable, or not one of ours (one-line message naming the file)."""


SHOWN = 3  # keys named per kind of difference


def _first(keys, count: int) -> str:
    keys = list(keys)
    more = f" (+{len(keys) - count} more)" if len(keys) > count else ""
    return ", ".join(keys[:count]) + more


def check_state_dict(model: nn.Module, state: dict, path) -> None:
    """Raise CheckpointError naming `path` unless `state` has exactly the model's keys with the
    same shapes (missing keys, unexpected keys and shape mismatches, the first few of each)."""
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: model weights are a {type(state).__name__}, not a state dict")
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    mismatched = [f"{k} {tuple(state[k].shape)} vs model {tuple(v.shape)}" for k, v in own.items()
                  if k in state and hasattr(state[k], "shape") and tuple(state[k].shape) != tuple(v.shape)]
    problems = []
    if mismatched:
        problems.append(f"{len(mismatched)} shape mismatch(es): {_first(mismatched, SHOWN)}")
    if missing:
        problems.append(f"{len(missing)} missing key(s): {_first(missing, SHOWN)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected key(s): {_first(unexpected, SHOWN)}")
    if problems:
        raise CheckpointError(f"{path}: weights do not fit {type(model).__name__} (another model or class "
                              f"count?): {'; '.join(problems)}")


def migrate(ckpt: dict, path="checkpoint") -> dict:
    """A checkpoint dict in the current format (a format-1 dict is rewritten, a newer one refused)."""
    version = int(ckpt.get("format", 1))
    if version > FORMAT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format {version} is newer than this code reads "
                              f"({FORMAT_VERSION}); update voxseg")
    if version == 1:
        ckpt = dict(ckpt)
        trainer = {"iteration": int(ckpt.pop("iteration", 0)), "rng": ckpt.pop("rng", []),
                   "world_size": int(ckpt.pop("world_size", len(ckpt.get("rng") or []) or 1)),
                   "skipped_total": 0}
        validation = {"best": ckpt.pop("best", None), "best_iteration": int(ckpt.pop("best_iteration", 0))}
        ckpt.update(format=FORMAT_VERSION, trainer=trainer, hooks={"validation": validation})
        for key in ("optimizer", "scheduler", "scaler", "ema", "config", "card"):
            ckpt.setdefault(key, None)
    return ckpt


def load_checkpoint(path, map_location="cpu") -> dict:
    """Read a checkpoint with weights_only=True, migrated to the current format; raises one line
    naming the file on failure. Keep map_location="cpu" for anything holding RNG states."""
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
    return migrate(ckpt, path)


def model_state(ckpt: dict) -> dict:
    """The weights to evaluate: the EMA average when the checkpoint has one."""
    if ckpt.get("ema"):
        return ckpt["ema"]["module"]
    return ckpt["model"]


def capture_rng() -> dict:
    """RNG states of python, numpy, torch CPU and every CUDA device, as CPU tensors/primitives."""
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
    """Inverse of `capture_rng`. Tensors are brought to the CPU first (a checkpoint loaded with a
    CUDA map_location holds them on the GPU, where set_rng_state and .numpy() refuse them).
    CUDA states are restored when both sides have CUDA."""
    py = state["python"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss"]))
    npst = state["numpy"]
    np.random.set_state((npst["name"], npst["keys"].cpu().numpy().astype(np.uint32), npst["pos"],
                         npst["has_gauss"], npst["gauss"]))
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = [s.cpu() for s in state["cuda"][: torch.cuda.device_count()]]
        torch.cuda.set_rng_state_all(cuda_states)


class Checkpointer:
    """Assembles a checkpoint from the pieces of a run and loads one back into them.

    pieces: name -> object with `state_dict()` / `load_state_dict(state)`, or None when the run has
    no such piece (scaler without fp16, EMA off). `trainer` (iteration, RNG) and `hooks` (each hook
    with a non-empty `state_dict()`, keyed by `hook.name`) are pieces too. `state()` runs collectives
    (the trainer gathers every rank's RNG), so every rank calls `save`; rank 0 alone writes.
    """

    PIECES = ("model", "optimizer", "scheduler", "scaler", "ema")

    def __init__(self, run_dir, trainer, hooks, config: dict, is_writer: bool = True, card: dict | None = None,
                 **pieces):
        unknown = set(pieces) - set(self.PIECES)
        if unknown:
            raise TypeError(f"Checkpointer: unknown pieces {sorted(unknown)} (known: {self.PIECES})")
        self.run_dir = Path(run_dir)
        self.trainer, self.hooks, self.config, self.card = trainer, list(hooks), config, card
        self.pieces = {name: pieces.get(name) for name in self.PIECES}
        self.is_writer = is_writer

    def state(self) -> dict:
        out = {"format": FORMAT_VERSION}
        for name, piece in self.pieces.items():
            out[name] = piece.state_dict() if piece is not None else None
        out["trainer"] = self.trainer.state_dict()
        out["hooks"] = {h.name: s for h in self.hooks if (s := h.state_dict())}
        out["config"] = self.config
        out["card"] = self.card
        return out

    def save(self, name: str) -> Path:
        """Write <run>/<name>.pth (rank 0); returns the path."""
        state = self.state()
        path = self.run_dir / f"{name}.pth"
        if self.is_writer:
            atomic_save(state, path)
        return path

    def load(self, path) -> dict:
        """Restore every piece from the checkpoint at `path` (read onto the CPU; each piece moves
        its tensors where they belong). Returns the checkpoint dict."""
        ckpt = load_checkpoint(path, "cpu")
        if self.pieces["model"] is not None:  # another model or class count: one line, before any piece changes
            check_state_dict(self.pieces["model"], ckpt["model"], path)
        for name, piece in self.pieces.items():
            state = ckpt.get(name)
            if piece is None:
                continue
            if not state:
                if name == "scaler":  # e.g. amp switched to fp16 on resume: the scaler starts afresh
                    log.warning("%s has no GradScaler state; the scaler starts afresh", path)
                    continue
                raise CheckpointError(f"{path}: the run needs '{name}' state but the checkpoint has none "
                                      + ("(train.ema.enabled=true but the checkpoint has no EMA)" if name == "ema" else ""))
            piece.load_state_dict(state)
        hook_states = ckpt.get("hooks") or {}
        for hook in self.hooks:
            if hook.name in hook_states:
                hook.load_state_dict(hook_states[hook.name])
        self.trainer.load_state_dict(ckpt["trainer"])
        return ckpt
