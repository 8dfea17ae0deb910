"""Engine registry: which engines exist, what each can do, and `resolve_engine`.

Every engine implements the interface of `TorchEngine` (subm_conv, down_conv, up_conv,
depthwise_conv), takes canonical weights [K, Cin, Cout] (depthwise [K, C]) and returns features
in the row order of the SparseContext, so layers and checkpoints do not depend on the engine.
"""

import importlib
import importlib.util

import torch

ENGINES = ("torch", "spconv", "minkowski", "torchsparse")

_INSTALL = {
    "spconv": "pip install spconv (CPU, forward only) or spconv-cu126 (CUDA)",
    "minkowski": "bash scripts/install_minkowski.sh $(which python)",
    "torchsparse": "torchsparse from its GitHub source (CUDA only)",
}

# Preference when several engines can run the job (fastest first). On CPU the torch engine beats
# MinkowskiEngine and spconv's CPU path (scripts/bench_sparse.py), so it comes first there.
_AUTO_ORDER = {"cuda": ("spconv", "torchsparse", "minkowski", "torch"),
               "cpu": ("torch", "minkowski", "spconv")}


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def why_not(name: str, device, training: bool):
    """None if engine `name` can run on `device` (training: backward needed), else the reason."""
    device = torch.device(device)
    if name == "torch":
        return None
    if name == "spconv":
        if not _installed("spconv"):
            return f"spconv is not installed ({_INSTALL['spconv']})"
        from spconv.cppconstants import CPU_ONLY_BUILD
        if device.type == "cuda" and CPU_ONLY_BUILD:
            return "the installed spconv is the CPU-only wheel; install spconv-cu1xx for CUDA"
        if device.type != "cuda" and training:
            return "spconv's backward needs CUDA: on CPU it runs forward only"
        return None
    if name == "minkowski":
        if not _installed("MinkowskiEngine"):
            return f"MinkowskiEngine is not installed ({_INSTALL['minkowski']})"
        if device.type == "cuda":
            from .minkowski_engine import import_minkowski
            if not import_minkowski().is_cuda_available():
                return "the installed MinkowskiEngine was built CPU-only"
        return None
    if name == "torchsparse":
        if not _installed("torchsparse"):
            return f"torchsparse is not installed ({_INSTALL['torchsparse']})"
        if device.type != "cuda":
            return "torchsparse has no CPU path"
        return None
    raise ValueError(f"unknown sparse engine {name!r}; choose one of auto, {', '.join(ENGINES)}")


def resolve_engine(name: str, device, training: bool) -> str:
    """'auto' -> the fastest engine that can do the job on `device`; a concrete name is checked."""
    device = torch.device(device)
    if name == "auto":
        for cand in _AUTO_ORDER["cuda" if device.type == "cuda" else "cpu"]:
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


_MODULES = {"torch": ("torch_engine", "TorchEngine"), "spconv": ("spconv_engine", "SpconvEngine"),
            "minkowski": ("minkowski_engine", "MinkowskiEngineAdapter"),
            "torchsparse": ("torchsparse_engine", "TorchsparseEngine")}
_INSTANCES = {}


def get_engine(name: str):
    """The engine object for a concrete name (adapters are imported only here, when used)."""
    if name not in _INSTANCES:
        if name not in _MODULES:
            raise ValueError(f"unknown sparse engine {name!r}; choose one of {', '.join(ENGINES)}")
        module, cls = _MODULES[name]
        _INSTANCES[name] = getattr(importlib.import_module(f"{__name__}.{module}"), cls)()
    return _INSTANCES[name]
