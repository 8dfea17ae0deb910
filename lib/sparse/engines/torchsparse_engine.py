"""torchsparse 2.1 adapter (CUDA only), written against its documented functional API:
`torchsparse.SparseTensor(feats, coords, stride, spatial_range)` with coords (batch, x, y, z) in
finest-grid units, and `torchsparse.nn.functional.conv3d(input, weight, kernel_size, bias,
stride, padding, dilation, config, transposed, generative, training)`.

torchsparse caches hash tables and kernel maps in `SparseTensor._caches`; one cache object per
input lives in the SparseContext and is attached to every tensor handed over, so maps are built
once per forward pass. Its offsets run x fastest for odd kernels and z fastest for kernel 2 (as
ours). torchsparse 2.1 builds kernel maps without dilation and has no grouped convolution, so
dilated and depthwise layers run on the torch engine's kernel maps (CUDA too).
"""

import torch

from ..coords import ORIGIN_ALIGN
from . import EngineSpec, coarse_rows, register_engine, torch_engine
from .minkowski_engine import canonical_to_me


def import_torchsparse():
    try:
        import torchsparse
        import torchsparse.nn.functional as F
    except ImportError as err:
        raise ImportError(f"the torchsparse engine needs torchsparse 2.1 built from its GitHub source ({err})")
    return torchsparse, F


class _State:
    """Per-input: the shared torchsparse cache, the coordinate origin, and per stride the map
    from torchsparse's coarse row order to ours."""

    def __init__(self, ctx):
        c = ctx.coords(ctx.base_stride).to(torch.int64)
        # torchsparse hashes non-negative coordinates; shift by a multiple of every stride
        self.origin = torch.div(c[:, 1:].min(0).values, ORIGIN_ALIGN, rounding_mode="floor") * ORIGIN_ALIGN
        self.caches = None
        self.coarse_rows = {}


class TorchsparseEngine:
    name = "torchsparse"

    def __init__(self):
        self.ts, self.F = import_torchsparse()

    def _state(self, ctx) -> _State:
        if "torchsparse" not in ctx.engine_state:
            ctx.engine_state["torchsparse"] = _State(ctx)
        return ctx.engine_state["torchsparse"]

    def _tensor(self, state, feats, coords, stride):
        c = coords.to(torch.int64)
        shifted = torch.cat([c[:, :1], c[:, 1:] - state.origin.to(c.device)], 1).to(torch.int32)
        t = self.ts.SparseTensor(feats, shifted, stride=(stride,) * 3)
        if state.caches is None:
            state.caches = t._caches
        t._caches = state.caches
        return t

    def _conv(self, t, weight, kernel_size, stride=1, transposed=False):
        if kernel_size == 1:
            w = weight[0]  # torchsparse keeps a 1x1x1 kernel as [Cin, Cout]
        elif kernel_size == 2:
            w = weight  # kernel 2: z fastest, as canonical
        else:
            w = canonical_to_me(weight, kernel_size)
        return self.F.conv3d(t, w, kernel_size, stride=stride, transposed=transposed,
                             training=torch.is_grad_enabled())

    def subm_conv(self, x, weight, kernel_size: int, dilation: int):
        if dilation != 1:
            return torch_engine.conv(x.feats, weight, x.ctx.kernel_map(x.stride, kernel_size, dilation))
        state = self._state(x.ctx)
        return self._conv(self._tensor(state, x.feats, x.coords, x.stride), weight, kernel_size).feats

    def down_conv(self, x, weight):
        state = self._state(x.ctx)
        out = self._conv(self._tensor(state, x.feats, x.coords, x.stride), weight, 2, stride=2)
        if x.stride not in state.coarse_rows:
            # torchsparse orders the coarse rows its own way: find each in our coarse set
            c = out.coords.to(torch.int64)
            ours = torch.cat([c[:, :1], c[:, 1:] + state.origin.to(c.device)], 1)
            state.coarse_rows[x.stride] = coarse_rows(x.ctx, x.stride, ours, self.name)
        result = out.feats.new_empty(out.feats.shape)
        result[state.coarse_rows[x.stride]] = out.feats
        return result

    def up_conv(self, x, weight):
        state = self._state(x.ctx)
        fine = x.stride // 2
        if fine not in state.coarse_rows:
            # no torchsparse down pass yet in this input: run one (1 channel) to create its kernel map
            fine_coords = x.ctx.coords(fine)
            probe = type(x)(x.feats.new_zeros(len(fine_coords), 1), fine_coords, fine, x.ctx)
            self.down_conv(probe, weight.new_zeros(8, 1, 1))
        rows = state.coarse_rows[fine]
        t = self._tensor(state, x.feats[rows], x.coords[rows], x.stride)
        return self._conv(t, weight, 2, stride=2, transposed=True).feats

    def depthwise_conv(self, x, weight, kernel_size: int, dilation: int):
        return torch_engine.depthwise(x.feats, weight, x.ctx.kernel_map(x.stride, kernel_size, dilation))


def _torchsparse_check(device, training):
    return None if device.type == "cuda" else "torchsparse has no CPU path"


register_engine(EngineSpec("torchsparse", TorchsparseEngine, package="torchsparse", check=_torchsparse_check,
                           install="torchsparse from its GitHub source (CUDA only)", priority={"cuda": 20}))
