"""Optimizers (SGD, Adam, AdamW) and per-iteration learning-rate schedules with linear warm-up."""
import math

import torch
from torch import nn


def build_optimizer(model: nn.Module, opt_cfg) -> torch.optim.Optimizer:
    """Build the optimizer named by an `OptimizerConfig` over the model's trainable parameters."""
    params = [p for p in model.parameters() if p.requires_grad]
    if opt_cfg.no_decay_norm_bias:
        decay = [p for p in params if p.ndim > 1]
        no_decay = [p for p in params if p.ndim <= 1]
        groups = [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]
    else:
        groups = [{"params": params}]
    if opt_cfg.name == "sgd":
        if opt_cfg.nesterov and opt_cfg.momentum <= 0:
            raise ValueError("train.optimizer.nesterov=true needs train.optimizer.momentum > 0")
        return torch.optim.SGD(groups, lr=opt_cfg.lr, momentum=opt_cfg.momentum,
                               nesterov=opt_cfg.nesterov, weight_decay=opt_cfg.weight_decay)
    if len(opt_cfg.betas) != 2:
        raise ValueError(f"train.optimizer.betas needs 2 values, got {list(opt_cfg.betas)}")
    cls = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}.get(opt_cfg.name)
    if cls is None:
        raise ValueError(f"train.optimizer.name: unknown optimizer {opt_cfg.name!r} (sgd|adam|adamw)")
    return cls(groups, lr=opt_cfg.lr, betas=tuple(opt_cfg.betas), weight_decay=opt_cfg.weight_decay)


def lr_factor(sched_cfg, iteration: int, total: int) -> float:
    """Multiplier of the peak lr at `iteration` (0-based) of `total` iterations.

    Warm-up rises linearly from `warmup_start_factor` to 1 and multiplies the main shape;
    onecycle has its own rise and ignores the warm-up settings.
    """
    total = max(total, 1)
    t = min(iteration, total) / total
    floor = sched_cfg.min_lr_factor
    name = sched_cfg.name
    if name == "onecycle":
        rise = max(sched_cfg.onecycle_pct_start, 1e-8)
        start = 1.0 / sched_cfg.onecycle_div_factor
        if t < rise:
            return start + (1.0 - start) * (1 - math.cos(math.pi * t / rise)) / 2
        u = (t - rise) / max(1.0 - rise, 1e-8)
        return floor + (1.0 - floor) * (1 + math.cos(math.pi * u)) / 2
    if name == "poly":
        main = floor + (1.0 - floor) * (1.0 - t) ** sched_cfg.power
    elif name == "cosine":
        main = floor + (1.0 - floor) * (1 + math.cos(math.pi * t)) / 2
    elif name == "step":
        main = sched_cfg.gamma ** sum(1 for m in sched_cfg.milestones if iteration >= m)
    elif name == "constant":
        main = 1.0
    else:
        raise ValueError(f"train.scheduler.name: unknown schedule {name!r}")
    warm = round(sched_cfg.warmup_ratio * total) if sched_cfg.warmup_ratio > 0 else sched_cfg.warmup_iters
    if warm > 0 and iteration < warm:
        s = sched_cfg.warmup_start_factor
        main *= s + (1.0 - s) * iteration / warm
    return main


class IterationScheduler:
    """Sets every param group's lr to base_lr * lr_factor(iteration) before each optimizer step.

    The state is one integer, so checkpoints hold only primitives.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, sched_cfg, total_iterations: int):
        self.optimizer = optimizer
        self.cfg = sched_cfg
        self.total = total_iterations
        self.base_lrs = [g["lr"] for g in optimizer.param_groups]
        self.iteration = 0
        self._apply()

    def _apply(self):
        f = lr_factor(self.cfg, self.iteration, self.total)
        for group, base in zip(self.optimizer.param_groups, self.base_lrs):
            group["lr"] = base * f

    def step(self):
        """Advance one iteration (call after optimizer.step())."""
        self.iteration += 1
        self._apply()

    def get_lr(self) -> float:
        """Current lr of the first param group."""
        return self.optimizer.param_groups[0]["lr"]

    def state_dict(self) -> dict:
        return {"iteration": self.iteration, "base_lrs": list(self.base_lrs)}

    def load_state_dict(self, state: dict):
        self.iteration = int(state["iteration"])
        self.base_lrs = [float(x) for x in state["base_lrs"]]
        self._apply()
