"""Layers on SparseTensor. Convolutions run on the engine named by the input's SparseContext.

Weights use the canonical layout [K, Cin, Cout] (depthwise [K, C]) with offsets enumerated
x slowest, z fastest (see kernel_map.kernel_offsets), so a state_dict works with every engine.
"""

import math

import torch
from torch import nn

from .tensor import SparseTensor


def _grad_needed() -> bool:
    # spconv has no CPU backward: the engine choice must know whether a backward pass can follow
    return torch.is_grad_enabled()


class _ConvBase(nn.Module):
    """Holds weight [K, Cin, Cout] and optional bias [Cout], initialised like nn.Conv3d."""

    def __init__(self, cin: int, cout: int, kernel_volume: int, bias: bool):
        super().__init__()
        self.in_channels, self.out_channels = cin, cout
        self.weight = nn.Parameter(torch.empty(kernel_volume, cin, cout))
        self.bias = nn.Parameter(torch.empty(cout)) if bias else None
        self.reset_parameters()

    def reset_parameters(self):
        # nn.Conv3d's default (kaiming_uniform with a=sqrt(5)) is uniform(+-1/sqrt(fan_in))
        bound = 1.0 / math.sqrt(self.weight.shape[0] * self.weight.shape[1])
        nn.init.uniform_(self.weight, -bound, bound)
        if self.bias is not None:
            nn.init.uniform_(self.bias, -bound, bound)

    def _finish(self, feats: torch.Tensor) -> torch.Tensor:
        return feats if self.bias is None else feats + self.bias


class SubMConv3d(_ConvBase):
    """Submanifold convolution: output coordinates = input coordinates. Odd kernel, any dilation.

    Reads neighbours at c + o * dilation * stride, o in -r..r per axis.
    """

    def __init__(self, cin: int, cout: int, kernel_size: int = 3, dilation: int = 1, bias: bool = False):
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"SubMConv3d needs an odd kernel_size, got {kernel_size}")
        if dilation < 1:
            raise ValueError(f"SubMConv3d needs dilation >= 1, got {dilation}")
        self.kernel_size, self.dilation = kernel_size, dilation
        super().__init__(cin, cout, kernel_size ** 3, bias)

    def forward(self, x: SparseTensor) -> SparseTensor:
        engine = x.engine(_grad_needed())
        return x.replace(self._finish(engine.subm_conv(x, self.weight, self.kernel_size, self.dilation)))

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, dilation={self.dilation}"


class DownConv3d(_ConvBase):
    """Kernel 2, stride 2: stride s -> 2s, output coordinates floor(c / 2s) * 2s of occupied inputs."""

    def __init__(self, cin: int, cout: int, bias: bool = False):
        super().__init__(cin, cout, 8, bias)

    def forward(self, x: SparseTensor) -> SparseTensor:
        feats = x.engine(_grad_needed()).down_conv(x, self.weight)
        s2 = 2 * x.stride
        return SparseTensor(self._finish(feats), x.ctx.coords(s2), s2, x.ctx)


class UpConv3d(_ConvBase):
    """Transposed kernel 2, stride 2: stride s -> s/2 onto the finer coordinates known in the ctx.

    Weight k (offset kx*4 + ky*2 + kz) carries a coarse voxel p to its child p + k * s/2.
    """

    def __init__(self, cin: int, cout: int, bias: bool = False):
        super().__init__(cin, cout, 8, bias)

    def forward(self, x: SparseTensor) -> SparseTensor:
        if x.stride < 2:
            raise ValueError(f"UpConv3d needs a tensor at stride >= 2, got stride {x.stride}")
        feats = x.engine(_grad_needed()).up_conv(x, self.weight)
        s = x.stride // 2
        return SparseTensor(self._finish(feats), x.ctx.coords(s), s, x.ctx)


class DepthwiseConv3d(nn.Module):
    """Channelwise submanifold convolution, weight [K, C] (dense equivalent: conv3d groups=C)."""

    def __init__(self, channels: int, kernel_size: int = 3, dilation: int = 1, bias: bool = False):
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"DepthwiseConv3d needs an odd kernel_size, got {kernel_size}")
        self.kernel_size, self.dilation = kernel_size, dilation
        bound = 1.0 / math.sqrt(kernel_size ** 3)
        self.weight = nn.Parameter(torch.empty(kernel_size ** 3, channels).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(channels).uniform_(-bound, bound)) if bias else None

    def forward(self, x: SparseTensor) -> SparseTensor:
        feats = x.engine(_grad_needed()).depthwise_conv(x, self.weight, self.kernel_size, self.dilation)
        return x.replace(feats if self.bias is None else feats + self.bias)


class _FeatureWise(nn.Module):
    """Applies a plain torch module to the features [N, C], keeping coordinates."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def forward(self, x: SparseTensor) -> SparseTensor:
        return x.replace(self.module(x.feats))


class Linear(_FeatureWise):
    """Per-voxel linear map [N, Cin] -> [N, Cout]."""

    def __init__(self, cin: int, cout: int, bias: bool = True):
        super().__init__(nn.Linear(cin, cout, bias=bias))


class BatchNorm(_FeatureWise):
    """Batch norm over all voxels of the batch, per channel."""

    def __init__(self, channels: int, eps: float = 1e-5, momentum: float = 0.1):
        super().__init__(nn.BatchNorm1d(channels, eps=eps, momentum=momentum))


class ReLU(_FeatureWise):
    def __init__(self, inplace: bool = False):
        super().__init__(nn.ReLU(inplace=inplace))


class LeakyReLU(_FeatureWise):
    def __init__(self, negative_slope: float = 0.01, inplace: bool = False):
        super().__init__(nn.LeakyReLU(negative_slope, inplace=inplace))


class Dropout(_FeatureWise):
    def __init__(self, p: float = 0.5):
        super().__init__(nn.Dropout(p))


class GlobalPool(nn.Module):
    """Pools the voxels of each batch item: SparseTensor -> [B, C] (B = largest batch index + 1).

    mode: 'avg', 'max' or 'sum'; an empty batch item gives zeros.
    """

    def __init__(self, mode: str = "avg"):
        super().__init__()
        if mode not in ("avg", "max", "sum"):
            raise ValueError(f"GlobalPool mode must be avg, max or sum, got {mode!r}")
        self.mode = mode

    def forward(self, x: SparseTensor) -> torch.Tensor:
        batch = x.coords[:, 0].long()
        nb = int(batch.max()) + 1
        index = batch.unsqueeze(1).expand_as(x.feats)
        out = x.feats.new_zeros(nb, x.feats.shape[1])
        reduce = {"avg": "mean", "max": "amax", "sum": "sum"}[self.mode]
        return out.scatter_reduce(0, index, x.feats, reduce=reduce, include_self=False)


def cat(*tensors: SparseTensor) -> SparseTensor:
    """Concatenate features of tensors with equal coordinates (same ctx and stride) along channels."""
    first = tensors[0]
    for t in tensors[1:]:
        same = t.ctx is first.ctx and t.stride == first.stride and (
            t.coords is first.coords or torch.equal(t.coords, first.coords))
        if not same:
            raise ValueError(f"cat needs equal coordinates: got {first!r} and {t!r} "
                             "(different ctx, stride or coordinate rows)")
    return first.replace(torch.cat([t.feats for t in tensors], 1))


def neighbor_table(x: SparseTensor, kernel_size: int = 3, dilation: int = 1) -> torch.Tensor:
    """[N, K] int64: row of the neighbour at each canonical offset (c + o * dilation * stride), -1 if empty.

    Column K // 2 (the centre) is the row itself. Shares the ctx's kernel maps.
    """
    kmap = x.ctx.kernel_map(x.stride, kernel_size, dilation)
    n = len(x)
    table = torch.full((n, kmap.volume), -1, dtype=torch.int64, device=x.device)
    table[:, kmap.center] = torch.arange(n, device=x.device)
    order = kmap.in_order  # the map holds sorted positions; the table holds rows
    for k in range(kmap.volume):
        if k != kmap.center:
            out, inp = kmap.out_idx[k], kmap.in_idx[k]
            if order is not None:
                out, inp = order[out], order[inp]
            table[out, k] = inp
    return table
