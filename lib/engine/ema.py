"""Exponential moving average of a model's weights (floating parameters and buffers)."""
import copy

import torch
from torch import nn

from lib.model_contract import state_buffer_names


class ModelEMA:
    """Keeps `self.module`, a frozen copy of the model whose floating state follows
    ema = d * ema + (1 - d) * current after every optimizer step.

    With `warmup`, d = min(decay, (1 + t) / (10 + t)) at update t, so the average is not
    dominated by the random initialisation early on. Integer buffers (BatchNorm's
    num_batches_tracked) and the buffers modules declare as state (`state_buffers`,
    lib/model_contract.py: a schedule's temperature, a codebook's usage and memory) are copied, not
    averaged: the copy runs at the schedule's temperature, not at a lagging mean of past ones.
    """

    def __init__(self, model: nn.Module, decay: float = 0.999, warmup: bool = True):
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.decay = decay
        self.warmup = warmup
        self.updates = 0

    def current_decay(self) -> float:
        if not self.warmup:
            return self.decay
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self, model: nn.Module):
        """Fold the model's current weights into the average (model may be DDP-wrapped)."""
        model = getattr(model, "module", model)
        d = self.current_decay()
        current = model.state_dict()
        state = state_buffer_names(self.module)
        for name, avg in self.module.state_dict().items():
            value = current[name].detach()
            if avg.dtype.is_floating_point and name not in state:
                avg.mul_(d).add_(value.to(avg.dtype), alpha=1.0 - d)
            else:
                avg.copy_(value)
        self.updates += 1

    def state_dict(self) -> dict:
        return {"module": self.module.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict):
        self.module.load_state_dict(state["module"])
        self.updates = int(state["updates"])
