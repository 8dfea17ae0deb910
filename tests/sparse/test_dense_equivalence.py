"""Every torch-engine conv layer equals torch's dense conv on the densified grid (float64),
forward and gradients (features and weights)."""

import pytest
import torch
import torch.nn.functional as F

from lib.sparse import SparseTensor
from lib.sparse import nn as snn
from tests.sparse.dense_ref import (assert_same_value_and_grads, assert_submanifold_matches_conv3d,
                                    canonical_to_conv3d, canonical_to_conv_transpose3d, densify, leaf,
                                    random_coords, sample)

GRID = 7


@pytest.mark.parametrize("batch", [1, 2, 3])
@pytest.mark.parametrize("stride", [1, 2, 4])
@pytest.mark.parametrize("dilation", [1, 2, 3])
@pytest.mark.parametrize("kernel", [1, 3, 5])
def test_submanifold_matches_conv3d(kernel, dilation, stride, batch):
    coords = random_coords(batch, GRID, stride, 0.3, seed=kernel * 100 + dilation * 10 + stride + batch)
    feats = leaf(len(coords), 3, 1)
    layer = snn.SubMConv3d(3, 4, kernel, dilation, bias=True).double()
    out = layer(SparseTensor(feats, coords, stride=stride, engine="torch")).feats
    assert_submanifold_matches_conv3d(layer, feats, coords, out, stride, kernel, dilation, GRID, batch)


@pytest.mark.parametrize("batch", [1, 2, 3])
@pytest.mark.parametrize("stride", [1, 2, 4])
def test_downconv_matches_conv3d_k2s2(stride, batch):
    coords = random_coords(batch, 2 * GRID, stride, 0.1, seed=stride + 7 * batch)
    feats = leaf(len(coords), 3, 2)
    layer = snn.DownConv3d(3, 5).double()
    y = layer(SparseTensor(feats, coords, stride=stride, engine="torch"))
    assert y.stride == 2 * stride

    # output coordinate set = floor(c / 2s) * 2s of the occupied inputs
    c = coords.long()
    expect = torch.cat([c[:, :1], torch.div(c[:, 1:], 2 * stride, rounding_mode="floor") * 2 * stride], 1)
    assert set(map(tuple, expect.tolist())) == set(map(tuple, y.coords.long().tolist()))
    assert len(y) == len(set(map(tuple, expect.tolist())))

    dfeats = feats.detach().clone().requires_grad_()
    w = layer.weight.detach().clone().requires_grad_()
    dense = F.conv3d(densify(dfeats, coords, stride, 2 * GRID, batch), canonical_to_conv3d(w, 2), stride=2)
    ref = sample(dense, y.coords, 2 * stride)
    assert_same_value_and_grads(y.feats, ref, (feats, layer.weight), (dfeats, w))


@pytest.mark.parametrize("batch", [1, 2, 3])
@pytest.mark.parametrize("stride", [1, 2, 4])
def test_upconv_matches_conv_transpose3d(stride, batch):
    fine = random_coords(batch, 2 * GRID, stride, 0.1, seed=50 + stride + batch)
    x = SparseTensor(torch.zeros(len(fine), 1, dtype=torch.float64), fine, stride=stride, engine="torch")
    coarse_coords = x.ctx.coords(2 * stride)  # the coarse set the down path would produce
    feats = leaf(len(coarse_coords), 3, 3)
    layer = snn.UpConv3d(3, 4).double()
    y = layer(SparseTensor(feats, coarse_coords, 2 * stride, x.ctx))
    assert y.stride == stride and torch.equal(y.coords, fine)

    dfeats = feats.detach().clone().requires_grad_()
    w = layer.weight.detach().clone().requires_grad_()
    dense = F.conv_transpose3d(densify(dfeats, coarse_coords, 2 * stride, GRID, batch),
                               canonical_to_conv_transpose3d(w), stride=2)
    ref = sample(dense, fine, stride)
    assert_same_value_and_grads(y.feats, ref, (feats, layer.weight), (dfeats, w))


@pytest.mark.parametrize("kernel,dilation,stride", [(3, 1, 1), (3, 2, 2), (5, 1, 1), (5, 3, 4)])
def test_depthwise_matches_grouped_conv3d(kernel, dilation, stride):
    batch, ch = 2, 4
    coords = random_coords(batch, GRID, stride, 0.3, seed=kernel + dilation + stride)
    feats = leaf(len(coords), ch, 4)
    layer = snn.DepthwiseConv3d(ch, kernel, dilation).double()
    out = layer(SparseTensor(feats, coords, stride=stride, engine="torch")).feats

    dfeats = feats.detach().clone().requires_grad_()
    w = layer.weight.detach().clone().requires_grad_()
    dense_w = w.t().reshape(ch, 1, kernel, kernel, kernel)
    dense = F.conv3d(densify(dfeats, coords, stride, GRID, batch), dense_w,
                     padding=(kernel // 2) * dilation, dilation=dilation, groups=ch)
    ref = sample(dense, coords, stride)
    assert_same_value_and_grads(out, ref, (feats, layer.weight), (dfeats, w))


@pytest.mark.parametrize("kernel,dilation", [(3, 1), (5, 1), (3, 2)])
def test_sorted_rows_take_the_same_path_to_the_same_result(kernel, dilation):
    """Rows in (batch, x, y, z) order (what voxelizers return) skip the row<->position permutation."""
    coords = random_coords(2, GRID, 1, 0.3, seed=5)
    order = torch.argsort(((coords[:, 0] * 64 + coords[:, 1]) * 64 + coords[:, 2]) * 64 + coords[:, 3])
    coords = coords[order]
    feats = leaf(len(coords), 3, 6)
    layer = snn.SubMConv3d(3, 4, kernel, dilation).double()
    x = SparseTensor(feats, coords, engine="torch")
    assert x.ctx.coord_set(1).is_sorted
    out = layer(x).feats
    dense = F.conv3d(densify(feats, coords, 1, GRID, 2), canonical_to_conv3d(layer.weight, kernel),
                     padding=(kernel // 2) * dilation, dilation=dilation)
    torch.testing.assert_close(out, sample(dense, coords, 1))
