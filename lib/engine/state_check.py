"""Loading a checkpoint's weights into a model, checked first (`check_state_dict`, lib/engine/checkpoint.py),
so that weights of another model or another class count stop with one line naming the file and the
first keys that differ, instead of load_state_dict's multi-line RuntimeError.

Imports lib.engine.checkpoint, never the other way round (Checkpointer.load runs the same check)."""
from torch import nn

from lib.engine.checkpoint import check_state_dict, load_checkpoint, model_state

__all__ = ["check_state_dict", "load_weights"]


def load_weights(model: nn.Module, path) -> None:
    """Load the weights to evaluate (`model_state`) of checkpoint `path` into `model`, checked first
    (read onto the CPU; load_state_dict copies them to the model's device)."""
    state = model_state(load_checkpoint(path))
    check_state_dict(model, state, path)
    model.load_state_dict(state)
