"""MinkowskiEngine 0.5.4 adapter (CPU build from scripts/install_minkowski.sh; CUDA if built so).

Each input gets one ME CoordinateManager (in the SparseContext) holding one coordinate map per
stride, inserted from our coordinate sets, so ME caches its kernel maps across layers exactly as
it does in its own networks. ME enumerates kernel offsets x fastest / z slowest; the canonical
layout is x slowest / z fastest, so weights are permuted on the way in (autograd follows).
"""

import collections
import collections.abc

import torch

from .. import kernel_map as km
from . import EngineSpec, register_engine, torch_engine


def import_minkowski():
    """Import MinkowskiEngine, first restoring the aliases it needs on Python >= 3.10."""
    for name in ("Sequence", "Iterable", "Mapping"):
        if not hasattr(collections, name):
            # ME 0.5.4 does `from collections import Sequence`, removed from Python in 3.10
            setattr(collections, name, getattr(collections.abc, name))
    try:
        import MinkowskiEngine as ME
    except ImportError as err:
        raise ImportError("the minkowski engine needs MinkowskiEngine 0.5.4: "
                          f"bash scripts/install_minkowski.sh $(which python) ({err})")
    return ME


def canonical_to_me(weight: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """[K, ...] canonical (x slowest, z fastest) -> ME's offset order (x fastest, z slowest)."""
    k = kernel_size
    rest = weight.shape[1:]
    return weight.reshape(k, k, k, *rest).permute(2, 1, 0, *range(3, 3 + len(rest))).reshape(k ** 3, *rest)


class _State:
    """Per-input ME state: coordinate manager and, per stride, (map key, ME row -> our row, our row -> ME row)."""

    def __init__(self, ME, device: torch.device):
        kind = ME.CoordinateMapType.CUDA if device.type == "cuda" else ME.CoordinateMapType.CPU
        # ME sets the process-wide OpenMP thread count to its num_threads (default: all cores);
        # hand it torch's current count so using ME does not change how torch runs afterwards
        self.manager = ME.CoordinateManager(D=3, num_threads=torch.get_num_threads(), coordinate_map_type=kind)
        self.maps = {}

    def key(self, ctx, stride: int):
        if stride not in self.maps:
            coords = ctx.coords(stride)
            key, (me_to_ours, ours_to_me) = self.manager.insert_and_map(coords.contiguous(), [stride] * 3, "")
            me_to_ours, ours_to_me = me_to_ours.long(), ours_to_me.long()
            if torch.equal(me_to_ours, torch.arange(len(coords), device=me_to_ours.device)):
                me_to_ours = ours_to_me = None  # ME kept our order: no permutation needed
            self.maps[stride] = (key, me_to_ours, ours_to_me)
        return self.maps[stride]


class MinkowskiEngineAdapter:
    name = "minkowski"

    def __init__(self):
        self.ME = import_minkowski()
        from MinkowskiEngine.MinkowskiConvolution import (MinkowskiConvolutionFunction,
                                                          MinkowskiConvolutionTransposeFunction)
        from MinkowskiEngine.MinkowskiKernelGenerator import KernelGenerator
        from MinkowskiEngineBackend._C import ConvolutionMode
        self._conv_fn, self._convtr_fn = MinkowskiConvolutionFunction, MinkowskiConvolutionTransposeFunction
        self._kernel_generator, self._mode = KernelGenerator, ConvolutionMode.DEFAULT

    def _state(self, x) -> _State:
        if "minkowski" not in x.ctx.engine_state:
            x.ctx.engine_state["minkowski"] = _State(self.ME, x.device)
        return x.ctx.engine_state["minkowski"]

    def _apply(self, fn, x, weight, kernel_size, stride, dilation, out_stride):
        state = self._state(x)
        in_key, in_perm, _ = state.key(x.ctx, x.stride)
        out_key, _, out_inv = state.key(x.ctx, out_stride)
        feats = x.feats if in_perm is None else x.feats[in_perm]
        gen = self._kernel_generator(kernel_size=kernel_size, stride=stride, dilation=dilation, dimension=3)
        out = fn.apply(feats, canonical_to_me(weight, kernel_size), gen, self._mode, in_key, out_key,
                       state.manager)
        return out if out_inv is None else out[out_inv]

    def subm_conv(self, x, weight, kernel_size: int, dilation: int):
        return self._apply(self._conv_fn, x, weight, kernel_size, 1, dilation, x.stride)

    def down_conv(self, x, weight):
        return self._apply(self._conv_fn, x, weight, 2, 2, 1, 2 * x.stride)

    def up_conv(self, x, weight):
        return self._apply(self._convtr_fn, x, weight, 2, 2, 1, x.stride // 2)

    def depthwise_conv(self, x, weight, kernel_size: int, dilation: int):
        """ME's channelwise conv is a Python loop over ME's kernel map; run that map through the
        torch engine's Function (same arithmetic, no saved gathers)."""
        cache = x.ctx.engine_state.setdefault("minkowski_depthwise", {})
        key = (x.stride, kernel_size, dilation)
        if key not in cache:
            cache[key] = self._kernel_map(x, kernel_size, dilation)
        return torch_engine.depthwise(x.feats, weight, cache[key])

    def _kernel_map(self, x, kernel_size, dilation) -> km.KernelMap:
        state = self._state(x)
        key, perm, _ = state.key(x.ctx, x.stride)
        gen = self._kernel_generator(kernel_size=kernel_size, stride=1, dilation=dilation, dimension=3)
        region_type, region_offset, _ = gen.get_kernel([x.stride] * 3, False)
        pairs = state.manager.kernel_map(key, key, 1, kernel_size, dilation, region_type=region_type,
                                         region_offset=region_offset)
        vol = kernel_size ** 3
        me_order = canonical_to_me(torch.arange(vol), kernel_size).tolist()  # canonical k at ME slot m
        empty = torch.empty(0, dtype=torch.int64, device=x.device)
        in_idx, out_idx = [empty] * vol, [empty] * vol
        for m, io in pairs.items():
            io = io.long().to(x.device)
            src, dst = (io[0], io[1]) if perm is None else (perm[io[0]], perm[io[1]])
            in_idx[me_order[m]], out_idx[me_order[m]] = src, dst
        center = vol // 2
        in_idx[center] = out_idx[center] = None
        return km.KernelMap(in_idx, out_idx, len(x), len(x), center=center)


def _minkowski_check(device, training):
    if device.type == "cuda" and not import_minkowski().is_cuda_available():
        return "the installed MinkowskiEngine was built CPU-only"
    return None


register_engine(EngineSpec("minkowski", MinkowskiEngineAdapter, package="MinkowskiEngine", check=_minkowski_check,
                           install="bash scripts/install_minkowski.sh $(which python)",
                           priority={"cuda": 30, "cpu": 20}))  # CPU: slower than torch (scripts/bench_sparse.py)
