"""Value ranges of the schema's fields, one table per section: checked after the types, so that a
negative voxel size or zero iterations stops the run at start-up with one line naming the key.

Every float field must also be finite (NaN / inf is never a valid setting); that check applies to
all floats without a table entry. A rule on a list field applies to each element, on a dict field
to each value.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from .schema import Config
from .schema_data import AugmentConfig, DataConfig
from .schema_eval import PredictConfig, ProfileConfig, TTAConfig
from .schema_train import (DistConfig, EmaConfig, LossConfig, OptimizerConfig, SchedulerConfig,
                           TrainConfig)


@dataclass(frozen=True)
class Range:
    """lo <= value <= hi (or lo < value / value < hi when the bound is open); None = unbounded."""
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False

    def ok(self, value) -> bool:
        if self.lo is not None and (value <= self.lo if self.lo_open else value < self.lo):
            return False
        if self.hi is not None and (value >= self.hi if self.hi_open else value > self.hi):
            return False
        return True

    def __str__(self) -> str:
        parts = []
        if self.lo is not None:
            parts.append(f"{'>' if self.lo_open else '>='} {self.lo:g}")
        if self.hi is not None:
            parts.append(f"{'<' if self.hi_open else '<='} {self.hi:g}")
        return "must be " + " and ".join(parts)


ANY = Range()  # declared unbounded on purpose (e.g. angles)
POSITIVE = Range(0, lo_open=True)
NON_NEGATIVE = Range(0)
AT_LEAST_ONE = Range(1)
PROBABILITY = Range(0, 1)
FRACTION = Range(0, 1, hi_open=True)  # [0, 1)

RULES: dict[type, dict[str, Range]] = {
    Config: {"seed": NON_NEGATIVE},
    DataConfig: {"voxel_size": POSITIVE, "synthetic_scenes": AT_LEAST_ONE, "synthetic_seed": NON_NEGATIVE,
                 "batch_size": AT_LEAST_ONE, "num_workers": NON_NEGATIVE, "limit_numpoints": NON_NEGATIVE},
    AugmentConfig: {"rotate_x": ANY, "rotate_y": ANY, "rotate_z": ANY, "scale": POSITIVE, "flip_x_p": PROBABILITY, "flip_y_p": PROBABILITY,
                    "translate": NON_NEGATIVE, "elastic_p": PROBABILITY, "elastic_granularity": POSITIVE,
                    "elastic_magnitude": NON_NEGATIVE, "autocontrast_p": PROBABILITY,
                    "autocontrast_blend": PROBABILITY, "color_translate_p": PROBABILITY,
                    "color_translate_ratio": NON_NEGATIVE, "color_jitter_p": PROBABILITY,
                    "color_jitter_std": NON_NEGATIVE, "dropout_p": PROBABILITY, "dropout_ratio": FRACTION},
    TrainConfig: {"iterations": AT_LEAST_ONE, "epochs": NON_NEGATIVE, "accum_steps": AT_LEAST_ONE,
                  "clip_grad_norm": NON_NEGATIVE, "max_bad_steps": AT_LEAST_ONE, "val_every": NON_NEGATIVE,
                  "log_every": AT_LEAST_ONE, "ckpt_every": NON_NEGATIVE, "stop_at": NON_NEGATIVE,
                  "cpu_threads": NON_NEGATIVE, "loss_weights": NON_NEGATIVE},
    OptimizerConfig: {"lr": NON_NEGATIVE, "momentum": FRACTION, "weight_decay": NON_NEGATIVE, "betas": FRACTION},
    SchedulerConfig: {"warmup_iters": NON_NEGATIVE, "warmup_ratio": FRACTION,
                      "warmup_start_factor": PROBABILITY, "power": NON_NEGATIVE,
                      "milestones": NON_NEGATIVE, "gamma": POSITIVE, "min_lr_factor": PROBABILITY,
                      "onecycle_pct_start": Range(0, 1, lo_open=True, hi_open=True),
                      "onecycle_div_factor": POSITIVE},
    EmaConfig: {"decay": FRACTION},
    LossConfig: {"ce_weight": NON_NEGATIVE, "lovasz_weight": NON_NEGATIVE, "label_smoothing": FRACTION,
                 "class_weights": NON_NEGATIVE},
    DistConfig: {"nproc": AT_LEAST_ONE, "master_port": Range(0, 65535), "timeout_s": AT_LEAST_ONE},
    TTAConfig: {"rotations": AT_LEAST_ONE, "scales": POSITIVE},
    PredictConfig: {"max_voxels": NON_NEGATIVE, "tile_overlap": NON_NEGATIVE, "tile_context": NON_NEGATIVE},
    ProfileConfig: {"warmup": NON_NEGATIVE, "iterations": AT_LEAST_ONE, "depth": AT_LEAST_ONE,
                    "fit_fractions": Range(0, 1, lo_open=True)},
}


def check_value(cls: type, name: str, value) -> str | None:
    """The reason `value` is not acceptable for field `name` of section `cls`, or None when it is."""
    rule = RULES.get(cls, {}).get(name)
    items = value.values() if isinstance(value, dict) else value if isinstance(value, (list, tuple)) else [value]
    for item in items:
        if isinstance(item, bool) or not isinstance(item, (int, float)):
            continue
        if isinstance(item, float) and not math.isfinite(item):
            return "must be a finite number"
        if rule is not None and not rule.ok(item):
            return str(rule)
    return None
