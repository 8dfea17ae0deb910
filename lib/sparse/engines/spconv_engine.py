"""spconv 2.x adapter. The CPU wheel runs forward only (its backward needs CUDA).

spconv indexes a grid of the current resolution, so a stride-s tensor is handed over as
(c - origin) / s with one origin per input, aligned so that k2s2 parents agree with ours.
Index pairs are kept in one spconv indice_dict per input (in the SparseContext), so every layer
of a forward pass reuses them. spconv has no grouped convolution: DepthwiseConv3d runs on the
torch engine's kernel maps.
"""

import torch

from ..coords import ORIGIN_ALIGN
from . import EngineSpec, coarse_rows, register_engine, torch_engine


def import_spconv():
    try:
        import spconv.pytorch as spconv
    except ImportError as err:
        raise ImportError(f"the spconv engine needs spconv: pip install spconv (CPU) or spconv-cu126 ({err})")
    return spconv


def canonical_to_krsc(weight: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """[K, Cin, Cout] (x slowest, z fastest) -> spconv's [Cout, kx, ky, kz, Cin]."""
    k, cin, cout = kernel_size, weight.shape[1], weight.shape[2]
    if k == 1:
        # spconv computes a 1x1x1 conv as features @ weight.view(Cin, Cout), reading the memory as [Cin, Cout]
        return weight[0].contiguous().view(cout, 1, 1, 1, cin)
    return weight.permute(2, 0, 1).reshape(cout, k, k, k, cin)


class _State:
    """Per-input spconv state: grid origin, spatial shapes per stride, the shared indice_dict,
    and per stride the permutation from spconv's coarse row order to ours."""

    def __init__(self, ctx):
        c = ctx.coords(ctx.base_stride).to(torch.int64)
        lo = c[:, 1:].min(0).values
        hi = c[:, 1:].max(0).values
        self.origin = torch.div(lo, ORIGIN_ALIGN, rounding_mode="floor") * ORIGIN_ALIGN
        extent = (hi - self.origin + 1).tolist()
        self.base_shape = [-(-e // 64) * 64 for e in extent]  # even at every stride up to 32
        self.batch_size = int(c[:, 0].max()) + 1
        self.indice_dict = {}
        self.coarse_rows = {}

    def spatial_shape(self, stride: int):
        shape, s = list(self.base_shape), 1
        while s < stride:  # spconv's own output size of a k2s2 conv, step by step
            shape = [(v - 2) // 2 + 1 for v in shape]
            s *= 2
        return shape

    def indices(self, coords: torch.Tensor, stride: int) -> torch.Tensor:
        c = coords.to(torch.int64)
        xyz = torch.div(c[:, 1:] - self.origin.to(c.device), stride, rounding_mode="floor")
        return torch.cat([c[:, :1], xyz], 1).to(torch.int32).contiguous()


class SpconvEngine:
    name = "spconv"

    def __init__(self):
        self.sp = import_spconv()
        self._modules = {}

    def _state(self, ctx) -> _State:
        if "spconv" not in ctx.engine_state:
            ctx.engine_state["spconv"] = _State(ctx)
        return ctx.engine_state["spconv"]

    def _module(self, cls, cin, cout, kernel_size, **kw):
        key = (cls, cin, cout, kernel_size, tuple(sorted(kw.items())))
        if key not in self._modules:
            self._modules[key] = getattr(self.sp, cls)(cin, cout, kernel_size, bias=False, **kw)
        return self._modules[key]

    def _run(self, module, state, feats, coords, stride, weight, kernel_size):
        module = module.to(feats.device)
        st = self.sp.SparseConvTensor(feats, state.indices(coords, stride), state.spatial_shape(stride),
                                      state.batch_size, indice_dict=state.indice_dict)
        threads = torch.get_num_threads()
        if feats.device.type == "cpu":
            # spconv 2.3.8's CPU kernels race when torch runs them on several threads: some rows come
            # out wrong, differently on each run (upstream traveller59/spconv#679; our
            # test_spconv_cpu_forward_is_repeatable); on one thread they are exact
            torch.set_num_threads(1)
        try:
            out = module._conv_forward(torch.is_grad_enabled(), st, canonical_to_krsc(weight, kernel_size), None)
        finally:
            torch.set_num_threads(threads)
        state.indice_dict.update(out.indice_dict)
        return out

    def subm_conv(self, x, weight, kernel_size: int, dilation: int):
        state = self._state(x.ctx)
        mod = self._module("SubMConv3d", weight.shape[1], weight.shape[2], kernel_size, dilation=dilation,
                           indice_key=f"subm{x.stride}_{kernel_size}_{dilation}")
        return self._run(mod, state, x.feats, x.coords, x.stride, weight, kernel_size).features

    def down_conv(self, x, weight):
        state = self._state(x.ctx)
        mod = self._module("SparseConv3d", weight.shape[1], weight.shape[2], 2, stride=2,
                           indice_key=f"down{x.stride}")
        out = self._run(mod, state, x.feats, x.coords, x.stride, weight, 2)
        if x.stride not in state.coarse_rows:
            # spconv orders its output rows its own way: find each in our coarse coordinate set
            idx = out.indices.to(torch.int64)
            xyz = idx[:, 1:] * (2 * x.stride) + state.origin.to(idx.device)
            state.coarse_rows[x.stride] = coarse_rows(x.ctx, x.stride, torch.cat([idx[:, :1], xyz], 1), self.name)
        result = out.features.new_empty(out.features.shape)
        result[state.coarse_rows[x.stride]] = out.features
        return result

    def up_conv(self, x, weight):
        state = self._state(x.ctx)
        fine = x.stride // 2
        if f"down{fine}" not in state.indice_dict:
            # no spconv down pass yet in this input: run one (1 channel) to create the index pairs
            fine_coords = x.ctx.coords(fine)
            probe = x.feats.new_zeros(len(fine_coords), 1)
            self.down_conv(type(x)(probe, fine_coords, fine, x.ctx), weight.new_zeros(8, 1, 1))
        rows = state.coarse_rows[fine]
        mod = self._module("SparseInverseConv3d", weight.shape[1], weight.shape[2], 2, indice_key=f"down{fine}")
        out = self._run(mod, state, x.feats[rows], x.coords[rows], x.stride, weight, 2)
        return out.features

    def depthwise_conv(self, x, weight, kernel_size: int, dilation: int):
        return torch_engine.depthwise(x.feats, weight, x.ctx.kernel_map(x.stride, kernel_size, dilation))


def _spconv_check(device, training):
    from spconv.cppconstants import CPU_ONLY_BUILD
    if device.type == "cuda" and CPU_ONLY_BUILD:
        return "the installed spconv is the CPU-only wheel; install spconv-cu1xx for CUDA"
    if device.type != "cuda" and training:
        return "spconv's backward needs CUDA: on CPU it runs forward only"
    return None


register_engine(EngineSpec("spconv", SpconvEngine, package="spconv", check=_spconv_check,
                           install="pip install spconv (CPU, forward only) or spconv-cu126 (CUDA)",
                           priority={"cuda": 10, "cpu": 30}))  # CPU: slower than torch (scripts/bench_sparse.py)
