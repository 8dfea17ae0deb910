"""Layers on SparseTensor. Convolutions run on the engine named by the input's SparseContext.

Weights use the canonical layout [K, Cin, Cout] (depthwise [K, C]) with offsets enumerated
x slowest, z fastest (see kernel_map.kernel_offsets), so a state_dict works with every engine.
Submanifold layers also take a KernelRegion (lib.sparse.regions): K and the weight rows follow the
region's offset order. Cube regions run on the engine; no engine has the other regions, so those
run the torch kernels on the SparseContext's map of the region, whatever the engine.
"""

import math

import torch
from torch import nn

from .engines import torch_engine
from .kernel_map import table_derived
from .neighborhood import neighborhood_aggregate
from .regions import KernelRegion, as_region
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


def _layer_region(layer: str, kernel_size: int, dilation: int, region) -> KernelRegion:
    """The layer's region: `region` if given (then kernel_size/dilation must stay default), else the cube."""
    if region is not None:
        if not isinstance(region, KernelRegion):
            raise TypeError(f"{layer} region must be a KernelRegion, got {type(region).__name__}")
        if (kernel_size, dilation) != (3, 1):
            raise ValueError(f"{layer}: give either region or kernel_size/dilation, not both")
        return region
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"{layer} needs an odd kernel_size, got {kernel_size}")
    if dilation < 1:
        raise ValueError(f"{layer} needs dilation >= 1, got {dilation}")
    return as_region(kernel_size, dilation)


def subm_conv(x: SparseTensor, weight: torch.Tensor, region: KernelRegion) -> torch.Tensor:
    """Submanifold convolution of x by weight [K, Cin, Cout] over `region` (offset k = the region's
    k-th offset): [N, Cout] features. Cube regions run on x's engine, the others on the torch engine."""
    cube = region.as_cube()
    if cube is None:
        return torch_engine.conv(x.feats, weight, x.ctx.kernel_map(x.stride, region))
    return x.engine(_grad_needed()).subm_conv(x, weight, *cube)


def subm_conv_many(x: SparseTensor, weights, regions) -> list:
    """[subm_conv(x, w, r) for w, r in zip(weights, regions)], as one op where all of them run on
    the torch engine (its engine, or regions that are not cubes): x's gradient is then one buffer
    that every convolution adds into, not one [N, Cin] tensor per convolution summed by autograd."""
    weights, regions = list(weights), list(regions)
    engine = x.engine(_grad_needed())
    if engine.name != "torch" and any(r.as_cube() is not None for r in regions):
        return [subm_conv(x, w, r) for w, r in zip(weights, regions)]
    return torch_engine.conv_many(x.feats, weights, [x.ctx.kernel_map(x.stride, r) for r in regions])


class SubMConv3d(_ConvBase):
    """Submanifold convolution: output coordinates = input coordinates, weight [K, Cin, Cout].

    Reads neighbours at c + o * stride for the region's offsets o; by default the cube
    o in (-r..r) * dilation per axis. kernel_size / dilation are None for non-cube regions.
    """

    def __init__(self, cin: int, cout: int, kernel_size: int = 3, dilation: int = 1, bias: bool = False,
                 region: KernelRegion = None):
        self.region = _layer_region("SubMConv3d", kernel_size, dilation, region)
        self.kernel_size, self.dilation = self.region.as_cube() or (None, None)
        super().__init__(cin, cout, len(self.region), bias)

    def forward(self, x: SparseTensor) -> SparseTensor:
        return x.replace(self._finish(subm_conv(x, self.weight, self.region)))

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, region={self.region.name}"


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
    """Channelwise submanifold convolution, weight [K, C] (dense equivalent: conv3d groups=C).

    Any region: cube regions run on the engine, the others through neighborhood_aggregate on the
    ctx's neighbour table of the region (weights all ones over the offsets).
    """

    def __init__(self, channels: int, kernel_size: int = 3, dilation: int = 1, bias: bool = False,
                 region: KernelRegion = None):
        super().__init__()
        self.region = _layer_region("DepthwiseConv3d", kernel_size, dilation, region)
        self.kernel_size, self.dilation = self.region.as_cube() or (None, None)
        bound = 1.0 / math.sqrt(len(self.region))
        self.weight = nn.Parameter(torch.empty(len(self.region), channels).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(channels).uniform_(-bound, bound)) if bias else None

    def forward(self, x: SparseTensor) -> SparseTensor:
        if self.kernel_size is None:
            nbr = neighbor_table(x, self.region)
            feats = neighborhood_aggregate(x.feats, nbr, x.feats.new_ones(1, 1, 1), self.weight)
        else:
            feats = x.engine(_grad_needed()).depthwise_conv(x, self.weight, self.kernel_size, self.dilation)
        return x.replace(feats if self.bias is None else feats + self.bias)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[1]}, region={self.region.name}"


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


def occupancy(table: torch.Tensor) -> torch.Tensor:
    """[N] float32: the fraction of a neighbour table's K offsets that are occupied, per row (centre
    included); cached with the table (lib.sparse.kernel_map.table_derived)."""
    return table_derived(table, "occupancy", lambda t: t.ge(0).sum(1, dtype=torch.float32).div_(t.shape[1]))


def neighbor_table(x: SparseTensor, region=3, dilation: int = 1) -> torch.Tensor:
    """[N, K] int64: row of the neighbour at each region offset (c + o * stride), -1 if empty.

    `region` is a KernelRegion, or an odd int kernel size meaning the cube with `dilation`.
    The centre column (region.center, K // 2 for cubes) is the row itself. Built from the ctx's
    cached kernel map and cached with it: the same tensor comes back on every call, do not modify it.
    """
    return x.ctx.kernel_map(x.stride, region, dilation).neighbor_table(x.device)
