"""The model contract, shared by the trainer, the evaluator and the profiler (`models.contract`
re-exports it: models import it from there, lib/ from here, so lib/ never imports `models`).

Input: a model declares what it consumes with the class attribute `input_type`:
  "sparse" (default): a `lib.sparse.SparseTensor` of the batch's voxels;
  "points": a `lib.structure.PointBatch` (one sampled point per voxel, continuous coordinates).
Rows of every input are the batch's voxels in batch order, so the logits map back to the original
points through the same point->voxel maps whatever the backbone.

Output: `forward` returns logits [N, K] (rows in input order), or a dict
  {"logits": [N, K], "losses": {name: scalar Tensor}, "logs": {name: float or 0-d Tensor}}.
Each named loss is added to the criterion's loss times `train.loss_weights.<name>` (default 1.0)
and logged as `loss/<name>`; `logs` are written to TensorBoard as `model/<name>` and carry no gradient.

Progress: any submodule may define `on_train_progress(iteration: int, progress: float)`; the trainer
calls it before every optimizer step with the steps done so far and progress = iteration / (max_iter - 1)
(0.0 at the first step, 1.0 at the last). Schedules (temperatures, codebook resets) live in the
model's own file and keep their state in registered buffers, so evaluation needs no iteration count.
A callback that overwrites rows of a parameter (a codebook reset) returns {parameter: rows int64 [R]};
the trainer then clears the optimizer's state of those rows (`clear_optimizer_rows`), so a new row
starts without the momentum of the one it replaced. Under DDP the callback runs on every rank and
must leave the parameters equal on all of them (decide once and broadcast). A submodule may also
define `on_train_step_end()`, called on every rank after each step's forwards and update, before the
hooks (a checkpoint) run: the place to merge what the step's forwards counted over ranks
(`notify_step_end`).

Buffers: a module lists in the class attribute `state_buffers` the names of its buffers that are
state, not statistics of the data (a schedule's temperature, a codebook's usage counts and its
memory of recent inputs). The EMA copies them instead of averaging them, and before validation and
saving the ranks take rank 0's instead of their mean (`state_buffer_names`). Every other floating
buffer (BatchNorm's running statistics) is a statistic: averaged by both.
"""
from dataclasses import dataclass, field

import torch
from torch import nn

INPUT_TYPES = ("sparse", "points")


@dataclass
class ModelOutput:
    """The parsed output of one forward pass."""
    logits: torch.Tensor
    losses: dict = field(default_factory=dict)
    logs: dict = field(default_factory=dict)


def parse_output(output) -> ModelOutput:
    """ModelOutput from either output form; raises TypeError naming what is wrong."""
    if isinstance(output, torch.Tensor):
        return ModelOutput(output)
    if not isinstance(output, dict) or "logits" not in output:
        raise TypeError(f"a model must return logits or a dict with 'logits', got {type(output).__name__}")
    unknown = set(output) - {"logits", "losses", "logs"}
    if unknown:
        raise TypeError(f"model output has unknown keys {sorted(unknown)} (allowed: logits, losses, logs)")
    return ModelOutput(output["logits"], dict(output.get("losses") or {}), dict(output.get("logs") or {}))


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a DDP / EMA wrapper (or the model itself)."""
    return getattr(model, "module", model)


def input_type(model: nn.Module) -> str:
    """'sparse' or 'points': what `model` consumes (class attribute `input_type`, default sparse)."""
    kind = getattr(unwrap(model), "input_type", "sparse")
    if kind not in INPUT_TYPES:
        raise ValueError(f"{type(unwrap(model)).__name__}.input_type={kind!r}; expected one of {INPUT_TYPES}")
    return kind


def notify_progress(model: nn.Module, iteration: int, max_iter: int, optimizer=None) -> float:
    """Call every submodule's `on_train_progress(iteration, progress)`; returns the progress.
    Rows a callback reports overwritten lose their state in `optimizer` (when given)."""
    progress = min(1.0, iteration / max(1, max_iter - 1))
    for module in unwrap(model).modules():
        callback = getattr(module, "on_train_progress", None)
        if callable(callback):
            changed = callback(iteration, progress)
            if changed and optimizer is not None:
                clear_optimizer_rows(optimizer, changed)
    return progress


def notify_step_end(model: nn.Module) -> None:
    """Call every submodule's `on_train_step_end()` (every rank, after each training step)."""
    for module in unwrap(model).modules():
        callback = getattr(module, "on_train_step_end", None)
        if callable(callback):
            callback()


@torch.no_grad()
def clear_optimizer_rows(optimizer, changed: dict) -> None:
    """Zero the optimizer state of the given rows: changed {parameter: rows int64 [R]}. Every state
    tensor shaped like its parameter (Adam's moments, SGD's momentum) is cleared on those rows;
    scalars (Adam's step count) are per parameter and stay."""
    for param, rows in changed.items():
        for value in optimizer.state.get(param, {}).values():
            if torch.is_tensor(value) and value.shape == param.shape:
                value[rows.to(value.device)] = 0


def state_buffer_names(model: nn.Module) -> set:
    """Qualified names (as in `model.named_buffers()`) of the buffers its modules declare as state
    (class attribute `state_buffers`, a tuple of buffer names of that module)."""
    names = set()
    for prefix, module in unwrap(model).named_modules():
        for name in getattr(module, "state_buffers", ()):
            names.add(f"{prefix}.{name}" if prefix else name)
    return names
