"""The training loop: one optimizer step per iteration, everything else in hooks.

The loop knows no dataset or model name. A batch becomes the model's input through
`make_input(batch, device)` (lib/engine/inputs.py); the model's output follows
lib/model_contract.py: logits, plus named `losses` (each added times `train.loss_weights.<name>`,
default 1.0) and `logs` (no gradient). Per step the trainer publishes in `self.storage`
(lib/engine/storage.py, active while training so `get_event_storage()` finds it):
  "step_info": {"loss" (NaN when non-finite), "lr", "data_time", "step_time" (seconds),
                "grad_norm" (before clipping), "skipped" (no update was made: non-finite loss or
                gradient), "losses": {name: value}, "logs": {name: value}},
  "step_preds": [(predicted class [N], label [N]) per micro-batch], on the device.
"""
import contextlib
import logging
import math
import time

import torch
from torch import nn

from lib.engine.checkpoint import capture_rng, restore_rng
from lib.engine.dist import all_reduce_max, get_rank, get_world_size, is_dist
from lib.engine.precision import amp_dtype, autocast
from lib.engine.signals import check_signal
from lib.engine.storage import EventStorage
from lib.errors import UserError
from lib.model_contract import notify_progress, notify_step_end, parse_output

log = logging.getLogger("voxseg")


class BatchTooSmallError(UserError, RuntimeError):
    """BatchNorm met a single voxel in training (a scene too small for the network); names the scenes."""


class NonFiniteLossError(RuntimeError):
    """Raised after `max_bad_steps` consecutive steps with a NaN/inf loss or gradient."""


def gather(state) -> list:
    """Every rank's `state` (a picklable object), in rank order (on every rank)."""
    if not is_dist():
        return [state]
    states = [None] * get_world_size()
    torch.distributed.all_gather_object(states, state)
    return states


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
    """Runs optimizer steps up to `max_iter`.

    `self.stop_reason` set by a hook (`request_stop`) ends the loop after the current step.
    Checkpointed state (`state_dict`): iteration, every rank's RNG states, world size, skipped steps.
    """

    def __init__(self, model: nn.Module, criterion, optimizer, scheduler, stream, make_input,
                 max_iter: int, train_cfg, device: torch.device, scaler=None, ema=None, hooks=()):
        self.model, self.criterion = model, criterion
        self.optimizer, self.scheduler = optimizer, scheduler
        self.stream, self.make_input = stream, make_input
        self.max_iter, self.cfg, self.device = max_iter, train_cfg, device
        self.scaler, self.ema = scaler, ema
        self.hooks = list(hooks)
        self.storage = EventStorage()
        self.iteration = 0  # optimizer steps done so far
        self.bad_steps = 0  # consecutive non-finite steps
        self.skipped_total = 0
        self.stop_reason = ""
        self.completed = False  # True only when the loop ran to max_iter without an exception
        self.amp_dtype = amp_dtype(train_cfg.amp, device)
        self.loss_weights = dict(train_cfg.loss_weights)
        self._unused_weights_checked = False

    def hook(self, name: str):
        """The hook registered as `name` (KeyError when the run has none)."""
        for h in self.hooks:
            if h.name == name:
                return h
        raise KeyError(f"no hook named {name!r} in this run (train.hooks)")

    def request_stop(self, reason: str) -> None:
        self.stop_reason = reason

    def train(self, start_iter: int | None = None):
        if start_iter is not None:
            self.iteration = start_iter
        self.storage.iteration = self.iteration
        with self.storage.activated():
            try:
                for hook in self.hooks:
                    hook.before_train(self)
                while self.iteration < self.max_iter and not self.stop_reason:
                    check_signal(agree=True)  # the safe point where a SIGTERM stops training
                    self.storage.clear_step()
                    self.storage.iteration = self.iteration + 1  # values of this step carry its count
                    self.run_step()
                    self.iteration += 1
                    for hook in self.hooks:
                        hook.after_step(self)
                self.completed = self.iteration >= self.max_iter
            finally:
                for hook in self.hooks:
                    hook.after_train(self)

    def autocast(self):
        """Autocast context for the configured AMP dtype on this device (no-op in fp32)."""
        return autocast(self.cfg.amp, self.device)

    def run_step(self):
        self.model.train()
        notify_progress(self.model, self.iteration, self.max_iter, self.optimizer)
        accum = max(1, self.cfg.accum_steps)
        loss_sum, terms_sum, logs_sum, data_time = 0.0, {}, {}, 0.0
        bad = False
        preds = []
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
                    out = parse_output(self.model(inputs))
                loss, terms = self.criterion(out.logits, labels)
                loss, terms = self._add_model_losses(loss, terms, out.losses)
                preds.append((out.logits.detach().argmax(dim=1), labels))
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
            for k, v in out.logs.items():
                logs_sum[k] = logs_sum.get(k, 0.0) + float(v.detach().float() if torch.is_tensor(v) else v) / accum
        grad_norm, skipped = math.nan, bad
        if bad:
            self._skip_step("loss")
        else:
            grad_norm, stepped = self._update()
            skipped = not stepped
        notify_step_end(self.model)  # before the hooks: a checkpoint holds the step's merged counts
        self.scheduler.step()  # the schedule follows the iteration count, skipped steps included
        self.storage.put("step_preds", preds)
        self.storage.put("step_info", {
            "loss": math.nan if bad else loss_sum, "lr": self.scheduler.get_lr(), "data_time": data_time,
            "step_time": time.perf_counter() - start, "grad_norm": grad_norm, "skipped": skipped,
            "losses": terms_sum, "logs": logs_sum})

    def _add_model_losses(self, loss, terms: dict, losses: dict):
        """loss + sum of weight * each model loss; terms gains each model loss under its name."""
        if not self._unused_weights_checked:
            self._unused_weights_checked = True
            unused = sorted(set(self.loss_weights) - set(losses))
            if unused:
                log.warning("train.loss_weights names %s, which the model does not return (it returns %s)",
                            unused, sorted(losses) or "no named losses")
        for name, value in losses.items():
            if name in terms:
                raise ValueError(f"the model returns a loss named '{name}', which the criterion already "
                                 "logs; rename the model's loss")
            loss = loss + float(self.loss_weights.get(name, 1.0)) * value.float()
            terms[name] = value.detach().float()
        return loss, terms

    def _skip_step(self, what: str):
        self.optimizer.zero_grad(set_to_none=True)
        self.bad_steps += 1
        self.skipped_total += 1
        if self.bad_steps >= self.cfg.max_bad_steps:
            raise NonFiniteLossError(f"{what} was NaN/inf in {self.bad_steps} consecutive steps "
                                     f"(up to iteration {self.iteration + 1}); stopping "
                                     f"(train.max_bad_steps={self.cfg.max_bad_steps})")

    def _update(self):
        """Unscale, check the gradients, clip, step, update the EMA.

        Returns (gradient norm before clipping, whether the weights were updated). Non-finite
        gradients (agreed over ranks) skip the update: with fp16's GradScaler that is its usual
        overflow step (the scaler lowers its scale), otherwise a bad step like a non-finite loss.
        """
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        params = [p for p in self.model.parameters() if p.grad is not None]
        total = torch.nn.utils.get_total_norm([p.grad for p in params]) if params else torch.zeros(())
        grad_norm = float(total)
        finite = all_reduce_max(float(not math.isfinite(grad_norm))) == 0
        if not finite and self.scaler is None:
            self._skip_step("the gradient")
            return grad_norm, False
        if finite:
            self.bad_steps = 0
            if self.cfg.clip_grad_norm > 0:
                torch.nn.utils.clip_grads_with_norm_(params, self.cfg.clip_grad_norm, total)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)  # skips the step itself when it found inf/NaN
            self.scaler.update()
        else:
            self.optimizer.step()
        if finite and self.ema is not None:
            self.ema.update(self.model)
        if not finite:
            self.skipped_total += 1
        return grad_norm, finite

    def state_dict(self) -> dict:
        """Collective (gathers every rank's RNG state and data position): call on every rank."""
        stream = self.stream.state_dict() if hasattr(self.stream, "state_dict") else None
        return {"iteration": self.iteration, "rng": gather(capture_rng()), "world_size": get_world_size(),
                "skipped_total": self.skipped_total, "stream": gather(stream)}

    def load_state_dict(self, state: dict) -> None:
        """Restores the count, this rank's RNG streams and its data position (the stream's own
        state when the checkpoint has one per rank of this run, else `iteration * accum_steps`
        batches into the stream)."""
        self.iteration = int(state["iteration"])
        self.skipped_total = int(state.get("skipped_total", 0))
        rng = state["rng"]
        world, rank = get_world_size(), get_rank()
        if len(rng) != world:
            log.warning("the checkpoint was written by %d processes, resuming with %d: RNG streams differ",
                        len(rng), world)
        restore_rng(rng[rank % len(rng)])
        streams = state.get("stream") or []
        if len(streams) == world and streams[rank] is not None and hasattr(self.stream, "load_state_dict"):
            self.stream.load_state_dict(streams[rank])
        elif hasattr(self.stream, "seek"):
            self.stream.seek(self.iteration * max(1, self.cfg.accum_steps))
