"""The training loop: one optimizer step per iteration, everything else in hooks.

The loop knows no dataset or model name. A batch is turned into the model's input by
`make_input(batch, device)`; the model returns logits [N, K] (rows in batch order) or
{"logits": [N, K], "aux_losses": {name: scalar}}; auxiliary losses are added, times
`loss.aux_weight`, and logged under their names.
"""
import contextlib
import math
import time

import torch
from torch import nn

from lib.engine.dist import all_reduce_max
from lib.errors import UserError


class HookBase:
    """Callbacks around the loop. `after_train` runs on every exit path (exceptions included)."""

    def before_train(self, trainer): ...

    def after_step(self, trainer): ...

    def after_train(self, trainer): ...


class BatchTooSmallError(UserError, RuntimeError):
    """BatchNorm met a single voxel in training (a scene too small for the network); names the scenes."""


class NonFiniteLossError(RuntimeError):
    """Raised after `max_bad_steps` consecutive steps with a NaN/inf loss."""


def split_output(output):
    """(logits, {name: aux loss}) from either model output form."""
    if isinstance(output, dict):
        return output["logits"], dict(output.get("aux_losses") or {})
    return output, {}


@contextlib.contextmanager
def _naming_scenes(batch):
    """Turn BatchNorm's "Expected more than 1 value per channel" into one line naming the batch's scenes."""
    try:
        yield
    except ValueError as exc:
        if "more than 1 value per channel" not in str(exc):
            raise
        scenes = batch.get("scene") if isinstance(batch, dict) else None
        raise BatchTooSmallError(f"scene(s) {', '.join(scenes or ['?'])}: the batch holds too few voxels for "
                                 f"BatchNorm in training ({exc}); a scene this small is bad input: remove it, "
                                 "or lower data.voxel_size") from None


class Trainer:
    """Runs `max_iter` optimizer steps from `start_iter`.

    After each step `self.step_info` holds floats: loss, lr, each loss term, data_time and
    step_time (seconds), grad_norm, and `skipped` (True when the loss was non-finite and no update
    was made); `self.step_preds` the (predicted class [N], label [N]) voxel pairs of the step.
    `self.stop_reason` set by a hook ends the loop after the current step.
    """

    def __init__(self, model: nn.Module, criterion, optimizer, scheduler, stream, make_input,
                 max_iter: int, train_cfg, device: torch.device, scaler=None, ema=None, hooks=()):
        self.model, self.criterion = model, criterion
        self.optimizer, self.scheduler = optimizer, scheduler
        self.stream, self.make_input = stream, make_input
        self.max_iter, self.cfg, self.device = max_iter, train_cfg, device
        self.scaler, self.ema = scaler, ema
        self.hooks = list(hooks)
        self.iteration = 0  # optimizer steps done so far
        self.bad_steps = 0  # consecutive non-finite losses
        self.skipped_total = 0
        self.step_info = {}
        self.stop_reason = ""
        self.completed = False  # True only when the loop ran to max_iter without an exception
        use_amp = train_cfg.amp != "none" and device.type == "cuda"
        self.amp_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(train_cfg.amp) if use_amp else None

    def train(self, start_iter: int = 0):
        self.iteration = start_iter
        try:
            for hook in self.hooks:
                hook.before_train(self)
            while self.iteration < self.max_iter and not self.stop_reason:
                self.run_step()
                self.iteration += 1
                for hook in self.hooks:
                    hook.after_step(self)
            self.completed = self.iteration >= self.max_iter
        finally:
            for hook in self.hooks:
                hook.after_train(self)

    def autocast(self):
        """Autocast context for the configured AMP dtype (a no-op off CUDA or with amp=none)."""
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type="cuda", dtype=self.amp_dtype)

    def run_step(self):
        self.model.train()
        accum = max(1, self.cfg.accum_steps)
        loss_sum, terms_sum, data_time = 0.0, {}, 0.0
        bad = False
        self.step_preds = []  # (voxel predictions, voxel labels) of each micro-batch, for train metrics
        start = time.perf_counter()
        self.optimizer.zero_grad(set_to_none=True)
        for micro in range(accum):
            t0 = time.perf_counter()
            batch = next(self.stream)
            data_time += time.perf_counter() - t0
            inputs = self.make_input(batch, self.device)
            labels = batch["labels"].to(self.device, non_blocking=True)
            # Under DDP only the last micro-batch synchronises gradients.
            sync = micro == accum - 1 or not hasattr(self.model, "no_sync")
            with (contextlib.nullcontext() if sync else self.model.no_sync()):
                with self.autocast(), _naming_scenes(batch):
                    logits, aux = split_output(self.model(inputs))
                loss, terms = self.criterion(logits, labels)
                self.step_preds.append((logits.detach().argmax(dim=1), labels))
                for name, value in aux.items():
                    loss = loss + self.cfg.loss.aux_weight * value.float()
                    terms[f"aux/{name}"] = value.detach().float()
                # Every rank must agree to skip, or DDP's backward all-reduce would hang.
                bad = all_reduce_max(float(not torch.isfinite(loss).item())) > 0
                if bad:
                    # Draw the step's remaining micro-batches anyway: a resumed run places the
                    # stream at iteration * accum_steps batches.
                    for _ in range(accum - micro - 1):
                        next(self.stream)
                    break
                scaled = loss / accum
                (self.scaler.scale(scaled) if self.scaler is not None else scaled).backward()
            loss_sum += loss.item() / accum
            for k, v in terms.items():
                terms_sum[k] = terms_sum.get(k, 0.0) + v.item() / accum
        grad_norm = math.nan
        if bad:
            self._skip_step()
        else:
            self.bad_steps = 0
            grad_norm = self._update()
        self.scheduler.step()  # the schedule follows the iteration count, skipped steps included
        self.step_info = {"loss": math.nan if bad else loss_sum, "lr": self.scheduler.get_lr(),
                          "data_time": data_time, "step_time": time.perf_counter() - start,
                          "grad_norm": grad_norm, "skipped": bad, **terms_sum}

    def _skip_step(self):
        self.optimizer.zero_grad(set_to_none=True)
        self.bad_steps += 1
        self.skipped_total += 1
        if self.bad_steps >= self.cfg.max_bad_steps:
            raise NonFiniteLossError(f"loss was NaN/inf in {self.bad_steps} consecutive steps "
                                     f"(up to iteration {self.iteration + 1}); stopping "
                                     f"(train.max_bad_steps={self.cfg.max_bad_steps})")

    def _update(self) -> float:
        """Unscale, clip, step, update the EMA; returns the gradient norm before clipping (NaN
        when clipping is off)."""
        grad_norm = math.nan
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        if self.cfg.clip_grad_norm > 0:
            params = [p for p in self.model.parameters() if p.grad is not None]
            grad_norm = float(torch.nn.utils.clip_grad_norm_(params, self.cfg.clip_grad_norm))
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        if self.ema is not None:
            self.ema.update(self.model)
        return grad_norm
