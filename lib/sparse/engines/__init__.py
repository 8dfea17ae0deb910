"""Engine registry: which engines exist, what each can do, and `resolve_engine`.

Every engine implements the interface of `TorchEngine` (subm_conv, down_conv, up_conv,
depthwise_conv), takes canonical weights [K, Cin, Cout] (depthwise [K, C]) and returns features
in the row order of the SparseContext, so layers and checkpoints do not depend on the engine.

Each adapter file `<name>_engine.py` in this folder ends with `register_engine(EngineSpec(...))`:
its name, the package it needs and how to install it, when it cannot run, and its `auto` priority
per device. This package imports every such file at import time (the optional packages themselves
are imported only when an engine object is made), so adding an engine is one new file.
"""

import difflib
import importlib
import importlib.util
import pkgutil
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch

from lib.config.errors import ConfigError


class UnknownEngineError(ConfigError):
    """`engine` names no registered engine; the message suggests the closest one."""


@dataclass(frozen=True)
class EngineSpec:
    """name: the `engine` value. cls: the adapter class (built on first use). package: import name
    of the optional package (None: always there). install: how to install it. check(device,
    training) -> None or the reason it cannot run there (only asked once the package is installed).
    priority: device type ('cuda' | 'cpu') -> rank for `auto`, lower first; a missing device type
    means never picked by `auto` there. `auto` takes the first engine whose check passes for the
    device and for training / inference, so a forward-only engine drops out of training by its check."""

    name: str
    cls: type
    install: str = ""
    package: Optional[str] = None
    check: Callable = field(default=lambda device, training: None)
    priority: dict = field(default_factory=dict)


_SPECS: dict[str, EngineSpec] = {}


def register_engine(spec: EngineSpec) -> EngineSpec:
    if spec.name in _SPECS and _SPECS[spec.name].cls is not spec.cls:
        raise ValueError(f"sparse engine {spec.name!r} is registered twice")
    _SPECS[spec.name] = spec
    return spec


def engine_spec(name: str, key: str = "engine") -> EngineSpec:
    """The registered engine `name`; an unknown name raises UnknownEngineError naming `key`."""
    if name not in _SPECS:
        close = difflib.get_close_matches(name, list(_SPECS), n=1, cutoff=0.5)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise UnknownEngineError(f"unknown sparse engine {name!r} for '{key}'{hint} "
                                 f"(choose auto or one of {', '.join(ENGINES)})")
    return _SPECS[name]


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def why_not(name: str, device, training: bool):
    """None if engine `name` can run on `device` (training: backward needed), else the reason."""
    spec = engine_spec(name)
    if spec.package and not _installed(spec.package):
        return f"{spec.package} is not installed ({spec.install})"
    return spec.check(torch.device(device), training)


def auto_order(device_type: str) -> list[str]:
    """Engines `auto` tries on a device type, most preferred first."""
    ranked = [(s.priority[device_type], s.name) for s in _SPECS.values() if device_type in s.priority]
    return [name for _, name in sorted(ranked)]


def resolve_engine(name: str, device, training: bool) -> str:
    """'auto' -> the fastest engine that can do the job on `device`; a concrete name is checked."""
    device = torch.device(device)
    if name == "auto":
        for cand in auto_order("cuda" if device.type == "cuda" else "cpu"):
            if why_not(cand, device, training) is None:
                return cand
        return "torch"
    reason = why_not(name, device, training)
    if reason is not None:
        raise RuntimeError(f"sparse engine {name!r} cannot run on {device} "
                           f"({'training' if training else 'inference'}): {reason}")
    return name


def coarse_rows(ctx, stride: int, coords: torch.Tensor, engine: str) -> torch.Tensor:
    """Row in ctx's stride-2s coordinate set of each output row of an engine's own k2s2 conv
    (coords [M, 4] (batch, x, y, z) in finest-grid units); raises unless the two sets are equal."""
    coarse = ctx.coord_set(2 * stride)
    hit, rows = coarse.lookup(ctx.coder.encode(coords))
    if not bool(hit.all()) or len(rows) != len(coarse):
        raise RuntimeError(f"{engine}'s k2s2 output coordinates differ from floor(c / 2s) * 2s")
    return rows


_INSTANCES = {}


def get_engine(name: str):
    """The engine object for a concrete name (its optional package is imported here, when used)."""
    if name not in _INSTANCES:
        _INSTANCES[name] = engine_spec(name).cls()
    return _INSTANCES[name]


def _discover() -> tuple:
    for info in pkgutil.iter_modules(__path__):
        if info.name.endswith("_engine"):
            importlib.import_module(f"{__name__}.{info.name}")
    # the reference engine first, the others by name
    return tuple(sorted(_SPECS, key=lambda n: (n != "torch", n)))


ENGINES = _discover()
