"""Checking a checkpoint's weights against the model before loading them, so that weights of
another model or another class count stop with one line naming the file and the first keys that
differ, instead of load_state_dict's multi-line RuntimeError."""
from torch import nn

from lib.engine.checkpoint import CheckpointError, load_checkpoint, model_state

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


def load_weights(model: nn.Module, path) -> None:
    """Load the weights to evaluate (`model_state`) of checkpoint `path` into `model`, checked first
    (read onto the CPU; load_state_dict copies them to the model's device)."""
    state = model_state(load_checkpoint(path))
    check_state_dict(model, state, path)
    model.load_state_dict(state)
