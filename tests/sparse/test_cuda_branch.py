"""The torch engine's CUDA path (per-offset gather -> GEMM -> index_add_, no CSR chunks or threads),
forced on CPU with VOXSEG_TORCH_CONV_PATH=per_offset, equals torch's dense conv3d in float64, values
and gradients; and on the `meta` device it allocates every buffer where its input lives."""

import pytest
import torch
import torch.nn.functional as F

from lib.sparse import SparseTensor
from lib.sparse import nn as snn
from lib.sparse.engines import torch_engine
from lib.sparse.kernel_map import KernelMap
from tests.sparse.dense_ref import (assert_down_up_matches_dense, assert_same_value_and_grads,
                                    assert_submanifold_matches_conv3d, densify, leaf, random_coords, sample)

GRID = 7


@pytest.fixture
def cuda_path(monkeypatch):
    """Force the per-offset path and make the CPU-only chunked path fail loudly if it were taken."""
    monkeypatch.setenv("VOXSEG_TORCH_CONV_PATH", "per_offset")

    def refuse(*args):
        raise AssertionError("the chunked CPU path ran although per_offset was forced")

    monkeypatch.setattr(torch_engine, "_conv_chunked", refuse)
    monkeypatch.setattr(torch_engine, "_backward_chunked", refuse)


@pytest.mark.parametrize("kernel,dilation,stride,batch", [(3, 1, 1, 2), (3, 2, 2, 1), (5, 1, 1, 3), (1, 1, 1, 2)])
def test_submanifold_on_the_cuda_path_matches_conv3d(cuda_path, kernel, dilation, stride, batch):
    coords = random_coords(batch, GRID, stride, 0.3, seed=kernel + dilation + batch)
    feats = leaf(len(coords), 3, 1)
    layer = snn.SubMConv3d(3, 4, kernel, dilation, bias=True).double()
    out = layer(SparseTensor(feats, coords, stride=stride, engine="torch")).feats
    assert_submanifold_matches_conv3d(layer, feats, coords, out, stride, kernel, dilation, GRID, batch)


def test_down_and_up_on_the_cuda_path_match_dense(cuda_path):
    assert_down_up_matches_dense(GRID)


@pytest.mark.parametrize("kernel,dilation", [(3, 1), (3, 2), (5, 1)])
def test_depthwise_on_the_cuda_path_matches_grouped_conv3d(cuda_path, monkeypatch, kernel, dilation):
    def refuse_csr(*args):
        raise AssertionError("the CSR scatter (CPU path) ran although per_offset was forced")

    monkeypatch.setattr(KernelMap, "scatter_matrix", refuse_csr)
    ch = 4
    coords = random_coords(2, GRID, 1, 0.3, seed=kernel * dilation)
    feats = leaf(len(coords), ch, 4)
    layer = snn.DepthwiseConv3d(ch, kernel, dilation).double()
    out = layer(SparseTensor(feats, coords, engine="torch")).feats
    dfeats = feats.detach().clone().requires_grad_()
    w = layer.weight.detach().clone().requires_grad_()
    dense = F.conv3d(densify(dfeats, coords, 1, GRID, 2), w.t().reshape(ch, 1, kernel, kernel, kernel),
                     padding=(kernel // 2) * dilation, dilation=dilation, groups=ch)
    assert_same_value_and_grads(out, sample(dense, coords, 1), (feats, layer.weight), (dfeats, w))


def test_an_unknown_path_is_an_error(monkeypatch):
    monkeypatch.setenv("VOXSEG_TORCH_CONV_PATH", "chunky")
    coords = random_coords(1, GRID, 1, 0.3, seed=1)
    with pytest.raises(ValueError, match="VOXSEG_TORCH_CONV_PATH must be one of auto, per_offset"):
        snn.SubMConv3d(3, 4)(SparseTensor(torch.randn(len(coords), 3), coords, engine="torch"))


def _kmap_on(kmap: KernelMap, device: str) -> KernelMap:
    def move(ts):
        return None if ts is None else [None if t is None else t.to(device) for t in ts]

    def move1(t):
        return None if t is None else t.to(device)

    return KernelMap(move(kmap.in_idx), move(kmap.out_idx), kmap.n_in, kmap.n_out, kmap.center,
                     move1(kmap.in_order), move1(kmap.out_order), move1(kmap.in_inverse), move1(kmap.out_inverse))


@pytest.mark.parametrize("fn", ["conv", "depthwise"])
def test_the_cuda_path_allocates_on_the_input_device_meta(fn):
    """With features, weight and map on `meta`, forward and backward run without touching the CPU: a
    buffer created on a fixed device (a device-placement bug on CUDA) would fail here with a device
    mismatch. Shapes and dtypes come out as on CPU."""
    coords = random_coords(2, GRID, 1, 0.3, seed=2)
    x = SparseTensor(torch.zeros(len(coords), 1), coords, engine="torch")
    kmap = x.ctx.kernel_map(1, 3, 1)
    unsorted = x.ctx.coord_set(1).is_sorted is False
    assert unsorted  # random rows: the row <-> position permutations are exercised too
    meta_map = _kmap_on(kmap, "meta")
    n, cin, cout = len(coords), 5, 5 if fn == "depthwise" else 6
    feats = torch.empty(n, cin, device="meta", requires_grad=True)
    if fn == "conv":
        weight = torch.empty(kmap.volume, cin, cout, device="meta", requires_grad=True)
        out = torch_engine.conv(feats, weight, meta_map)
    else:
        weight = torch.empty(kmap.volume, cin, device="meta", requires_grad=True)
        out = torch_engine.depthwise(feats, weight, meta_map)
    assert out.device.type == "meta" and out.shape == (n, cout) and out.dtype == torch.float32
    gx, gw = torch.autograd.grad(out, (feats, weight), torch.empty_like(out))
    assert gx.device.type == gw.device.type == "meta"
    assert gx.shape == feats.shape and gw.shape == weight.shape


def test_a_res16unet_builds_on_meta():
    """Model construction allocates only through the default device: under torch.device('meta')
    every parameter and buffer lands on meta (no tensor pinned to the CPU in an __init__)."""
    from models.res16unet import Res16UNet34C

    with torch.device("meta"):
        model = Res16UNet34C(3, 20)
    tensors = list(model.parameters()) + list(model.buffers())
    assert tensors and all(t.device.type == "meta" for t in tensors)
