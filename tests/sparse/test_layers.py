"""Context caching, neighbour tables, pooling, concatenation, feature-wise layers and bad input."""

import pytest
import torch

from lib.sparse import KernelRegion, SparseTensor, resolve_engine
from lib.sparse import nn as snn
from tests.sparse.dense_ref import random_coords


def _tensor(batch=2, grid=8, stride=1, channels=3, seed=0):
    coords = random_coords(batch, grid, stride, 0.3, seed)
    feats = torch.randn(len(coords), channels, dtype=torch.float64)
    return SparseTensor(feats, coords, stride=stride, engine="torch")


def test_kernel_map_built_once_and_shared():
    x = _tensor()
    a, b = snn.SubMConv3d(3, 3).double(), snn.SubMConv3d(3, 3).double()
    b(a(x))
    assert list(x.ctx._kernel_maps) == [(1, KernelRegion.cube(3, 1))]
    kmap = x.ctx.kernel_map(1, 3, 1)
    snn.DepthwiseConv3d(3).double()(x)
    assert x.ctx.kernel_map(1, 3, 1) is kmap and len(x.ctx._kernel_maps) == 1
    snn.SubMConv3d(3, 3, dilation=2).double()(x)
    assert len(x.ctx._kernel_maps) == 2


def test_down_then_up_returns_to_the_input_coordinates():
    x = _tensor(stride=1)
    y = snn.DownConv3d(3, 4).double()(x)
    z = snn.DownConv3d(4, 4).double()(y)
    u = snn.UpConv3d(4, 4).double()(snn.UpConv3d(4, 4).double()(z))
    assert u.stride == 1 and torch.equal(u.coords, x.coords)
    assert z.stride == 4 and bool((z.coords[:, 1:] % 4 == 0).all())


@pytest.mark.parametrize("kernel,dilation,stride", [(3, 1, 1), (3, 2, 2), (5, 1, 4)])
def test_neighbor_table_matches_brute_force(kernel, dilation, stride):
    x = _tensor(stride=stride, seed=kernel + stride)
    table = snn.neighbor_table(x, kernel, dilation)
    rows = {tuple(c): i for i, c in enumerate(x.coords.tolist())}
    r = kernel // 2
    offsets = [(i, j, k) for i in range(-r, r + 1) for j in range(-r, r + 1) for k in range(-r, r + 1)]
    step = dilation * stride
    expect = [[rows.get((b, cx + ox * step, cy + oy * step, cz + oz * step), -1) for ox, oy, oz in offsets]
              for b, cx, cy, cz in x.coords.tolist()]
    assert table.tolist() == expect


@pytest.mark.parametrize("mode", ["avg", "max", "sum"])
def test_global_pool_per_batch_item(mode):
    x = _tensor(batch=3)
    out = snn.GlobalPool(mode)(x)
    for b in range(3):
        f = x.feats[x.coords[:, 0] == b]
        ref = {"avg": f.mean(0), "max": f.max(0).values, "sum": f.sum(0)}[mode]
        torch.testing.assert_close(out[b], ref)


def test_cat_requires_equal_coordinates():
    x = _tensor()
    y = snn.cat(x, snn.ReLU()(x))
    assert y.feats.shape[1] == 6 and torch.equal(y.feats[:, 3:], x.feats.clamp(min=0))
    down = snn.DownConv3d(3, 3).double()(x)
    with pytest.raises(ValueError, match="equal coordinates"):
        snn.cat(x, down)


def test_featurewise_layers_keep_coordinates():
    x = _tensor()
    for layer in (snn.Linear(3, 5), snn.BatchNorm(3), snn.LeakyReLU(), snn.Dropout(0.5)):
        y = layer.double()(x)
        assert y.coords is x.coords and y.ctx is x.ctx and len(y) == len(x)


def test_bad_input_raises_clear_errors():
    coords = torch.tensor([[0, 1, 2, 3], [0, 1, 2, 3]], dtype=torch.int32)
    with pytest.raises(ValueError, match="duplicate"):
        SparseTensor(torch.zeros(2, 1), coords)
    with pytest.raises(ValueError, match=r"\[N, 4\]"):
        SparseTensor(torch.zeros(2, 1), coords[:, :3])
    with pytest.raises(ValueError, match="multiples of 2"):
        SparseTensor(torch.zeros(1, 1), coords[:1], stride=2)
    with pytest.raises(ValueError, match="odd kernel_size"):
        snn.SubMConv3d(1, 1, kernel_size=4)
    with pytest.raises(ValueError, match="unknown sparse engine"):
        resolve_engine("nope", "cpu", True)


def test_torch_engine_resolves_everywhere():
    assert resolve_engine("torch", "cpu", True) == "torch"
    assert resolve_engine("auto", "cpu", True) in ("torch", "minkowski")
