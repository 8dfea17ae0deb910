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


def notify_progress(model: nn.Module, iteration: int, max_iter: int) -> float:
    """Call every submodule's `on_train_progress(iteration, progress)`; returns the progress."""
    progress = min(1.0, iteration / max(1, max_iter - 1))
    for module in unwrap(model).modules():
        callback = getattr(module, "on_train_progress", None)
        if callable(callback):
            callback(iteration, progress)
    return progress
