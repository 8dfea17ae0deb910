"""Kernel regions: offsets and order, neighbour sets against a coordinate dictionary (random and
real scans), region convolutions against dense conv3d with the region's mask, map caching, engines."""

import copy
import math
import pickle
from functools import reduce

import pytest
import torch
import torch.nn.functional as F

from lib.sparse import KernelRegion, SparseTensor
from lib.sparse import nn as snn
from lib.sparse.engines import why_not
from lib.sparse.kernel_map import kernel_offsets
from tests.sparse.dense_ref import assert_same_value_and_grads, densify, leaf, random_coords, sample
from tests.sparse.test_real_scan import _voxelized_scan

REGIONS = {
    "cube3": KernelRegion.cube(3),
    "cube3d2": KernelRegion.cube(3, 2),
    "cross5": KernelRegion.cross(5),
    "plane_xz": KernelRegion.plane("xz", 3, 2),
    "custom_no_centre": KernelRegion.custom([(1, 0, 0), (0, -2, 1), (-1, 0, 0), (0, 0, 3)]),
    "masked": KernelRegion.masked(KernelRegion.cube(3), [i % 3 != 1 for i in range(27)]),
}


def test_cube_keeps_the_canonical_order_and_dilation_scales_offsets():
    assert list(KernelRegion.cube(3).offsets) == kernel_offsets(3)
    assert list(KernelRegion.cube(5).offsets) == kernel_offsets(5)
    assert KernelRegion.cube(3, 2).offsets[0] == (-2, -2, -2) and len(KernelRegion.cube(3, 2)) == 27
    assert KernelRegion.cube(3, 2).as_cube() == (3, 2) and KernelRegion.cube(1).as_cube() == (1, 1)
    assert KernelRegion.cube(3).center == 13 and KernelRegion.cube(3).name == "cube3"


def test_cross_and_planes_by_hand():
    assert KernelRegion.cross(3).offsets == ((-1, 0, 0), (0, -1, 0), (0, 0, -1), (0, 0, 0),
                                             (0, 0, 1), (0, 1, 0), (1, 0, 0))
    assert len(KernelRegion.cross(5, 3)) == 13 and (0, 0, 6) in KernelRegion.cross(5, 3).offsets
    assert KernelRegion.plane("xy").offsets == tuple((x, y, 0) for x in (-1, 0, 1) for y in (-1, 0, 1))
    assert all(o[0] == 0 for o in KernelRegion.plane("yz", 5).offsets) and len(KernelRegion.plane("yz", 5)) == 25
    for r in (KernelRegion.cross(3), KernelRegion.plane("xz")):
        assert r.as_cube() is None and r.offsets == tuple(sorted(r.offsets))


def test_custom_keeps_order_rejects_duplicates_and_bad_input():
    r = KernelRegion.custom([(0, 0, 1), (0, 0, 0), (2, -1, 0)], name="mine")
    assert r.offsets == ((0, 0, 1), (0, 0, 0), (2, -1, 0)) and r.center == 1 and r.name == "mine"
    assert torch.equal(r.offsets_tensor(), torch.tensor([[0, 0, 1], [0, 0, 0], [2, -1, 0]]))
    with pytest.raises(ValueError, match="duplicate"):
        KernelRegion.custom([(0, 0, 1), (1, 0, 0), (0, 0, 1)])
    with pytest.raises(ValueError, match="triples"):
        KernelRegion.custom([(0, 0)])
    with pytest.raises(ValueError, match="at least one"):
        KernelRegion.custom([])
    with pytest.raises(ValueError, match="plane axes"):
        KernelRegion.plane("xx")
    with pytest.raises(ValueError, match="odd kernel_size"):
        KernelRegion.cube(4)
    with pytest.raises(ValueError, match="keeps no offset"):
        KernelRegion.masked(KernelRegion.cross(3), [False] * 7)
    with pytest.raises(AttributeError):
        r.name = "other"


def test_from_name_inverts_the_built_in_names():
    for region in (KernelRegion.cube(3), KernelRegion.cube(5, 2), KernelRegion.cross(3, 3),
                   KernelRegion.plane("xz", 3), KernelRegion.plane("yz", 5, 2)):
        back = KernelRegion.from_name(region.name)
        assert back == region and back.name == region.name
    for bad in ("cube", "cube4", "sphere3", "plane_xx3", "cube3d0", "cross3 "):
        with pytest.raises(ValueError):
            KernelRegion.from_name(bad)


def test_equality_and_hash_follow_the_offsets_only():
    a = KernelRegion.custom(KernelRegion.cube(3).offsets, name="same as cube")
    assert a == KernelRegion.cube(3) and hash(a) == hash(KernelRegion.cube(3)) and a.as_cube() == (3, 1)
    assert KernelRegion.cross(3) != KernelRegion.plane("xy") and KernelRegion.cube(3) != KernelRegion.cube(3, 2)
    reversed_cube = KernelRegion.custom(KernelRegion.cube(3).offsets[::-1])
    assert reversed_cube != KernelRegion.cube(3) and reversed_cube.as_cube() is None
    m = KernelRegion.masked(KernelRegion.cube(3), KernelRegion.cube(3).mask().flatten()
                            & torch.tensor([sum(v != 0 for v in o) <= 1 for o in KernelRegion.cube(3).offsets]))
    assert m == KernelRegion.cross(3)


def _brute_force_table(coords, region, stride, rows=None):
    """Neighbour rows by coordinate dictionary lookup (rows: which rows to check, default all)."""
    where = {tuple(c): i for i, c in enumerate(coords.tolist())}
    rows = range(len(coords)) if rows is None else rows
    cl = coords.tolist()
    return [[where.get((cl[i][0], cl[i][1] + ox * stride, cl[i][2] + oy * stride, cl[i][3] + oz * stride), -1)
             for ox, oy, oz in region.offsets] for i in rows]


@pytest.mark.parametrize("name", list(REGIONS))
@pytest.mark.parametrize("stride", [1, 2])
def test_neighbor_table_matches_a_coordinate_dictionary(name, stride):
    region = REGIONS[name]
    coords = random_coords(2, 9, stride, 0.35, seed=stride)  # rows in random order
    x = SparseTensor(torch.zeros(len(coords), 1), coords, stride=stride, engine="torch")
    table = snn.neighbor_table(x, region)
    assert table.shape == (len(coords), len(region))
    assert table.tolist() == _brute_force_table(coords, region, stride)
    assert snn.neighbor_table(x, region) is table  # cached with the map


@pytest.mark.parametrize("name", ["cube3d2", "cross5", "plane_xz", "custom_no_centre"])
def test_neighbor_table_on_a_real_scan(name):
    coords, _, _ = _voxelized_scan(0.05)
    region = REGIONS[name]
    x = SparseTensor(torch.zeros(len(coords), 1), coords, engine="torch")
    table = snn.neighbor_table(x, region)
    rows = torch.randperm(len(coords), generator=torch.Generator().manual_seed(0))[:3000].tolist()
    assert table[rows].tolist() == _brute_force_table(coords, region, 1, rows)
    assert len(coords) > 10000 and 0 < (table >= 0).sum() < table.numel()


def test_kernel_map_cache_key_distinguishes_regions_and_keeps_int_calls():
    coords = random_coords(1, 6, 1, 0.3, seed=3)
    x = SparseTensor(torch.zeros(len(coords), 1), coords, engine="torch")
    cube = x.ctx.kernel_map(1, 3, 1)
    assert x.ctx.kernel_map(1, KernelRegion.cube(3)) is cube
    assert x.ctx.kernel_map(1, KernelRegion.custom(KernelRegion.cube(3).offsets)) is cube
    cross = x.ctx.kernel_map(1, KernelRegion.cross(3))
    plane = x.ctx.kernel_map(1, KernelRegion.plane("xy"))
    assert cross is not cube and plane is not cross and cross.volume == 7 and plane.volume == 9
    assert x.ctx.kernel_map(1, KernelRegion.cross(3)) is cross
    assert len(x.ctx._kernel_maps) == 3
    with pytest.raises(ValueError, match="dilation"):
        x.ctx.kernel_map(1, KernelRegion.cross(3), 2)


def _dense_region_kernel(region, weight):
    """Region weight [K, Cin, Cout] (or depthwise [K, C]) -> conv3d weight on the region's cube,
    zero outside the region; also returns the cube's dilation and padding."""
    d = reduce(math.gcd, (abs(v) for o in region.offsets for v in o), 0) or 1
    mask = region.mask(dilation=d)
    k = mask.shape[0]
    depthwise = weight.ndim == 2
    cin, cout = (1, weight.shape[1]) if depthwise else weight.shape[1:]
    dense = weight.new_zeros(cout, cin, k, k, k)
    for i, o in enumerate(region.offsets):
        x, y, z = (v // d + k // 2 for v in o)
        dense[:, :, x, y, z] = weight[i].unsqueeze(0).t() if depthwise else weight[i].t()
    return dense, d, (k // 2) * d


@pytest.mark.parametrize("name", list(REGIONS))
@pytest.mark.parametrize("depthwise", [False, True])
def test_region_convs_match_dense_conv3d_with_the_region_mask(name, depthwise):
    region, stride, grid, batch = REGIONS[name], 2, 7, 2
    coords = random_coords(batch, grid, stride, 0.4, seed=5)
    feats = leaf(len(coords), 3, seed=1)
    torch.manual_seed(0)
    layer = (snn.DepthwiseConv3d(3, region=region) if depthwise else snn.SubMConv3d(3, 4, region=region)).double()
    assert layer.weight.shape[0] == len(region)
    out = layer(SparseTensor(feats, coords, stride=stride, engine="torch")).feats

    feats_ref = feats.detach().clone().requires_grad_()
    weight_ref = layer.weight.detach().clone().requires_grad_()
    kernel, d, pad = _dense_region_kernel(region, weight_ref)
    dense = F.conv3d(densify(feats_ref, coords, stride, grid, batch), kernel, padding=pad, dilation=d,
                     groups=3 if depthwise else 1)
    ref = sample(dense, coords, stride)
    assert_same_value_and_grads(out, ref, [feats, layer.weight], [feats_ref, weight_ref])


def test_region_conv_on_a_real_scan_matches_dense_conv3d():
    coords, feats, size = _voxelized_scan(0.1)
    region = KernelRegion.masked(KernelRegion.cube(3, 2), [o[2] <= 0 for o in KernelRegion.cube(3, 2).offsets])
    torch.manual_seed(0)
    layer = snn.SubMConv3d(3, 2, region=region).double()
    out = layer(SparseTensor(feats, coords, engine="torch")).feats
    kernel, d, pad = _dense_region_kernel(region, layer.weight.detach())
    ref = sample(F.conv3d(densify(feats, coords, 1, size, 1), kernel, padding=pad, dilation=d), coords, 1)
    torch.testing.assert_close(out, ref)


def test_regions_survive_pickling_and_layer_deepcopy():
    r = REGIONS["custom_no_centre"]
    back = pickle.loads(pickle.dumps(r))
    assert back == r and back.name == r.name and hash(back) == hash(r)
    layer = copy.deepcopy(snn.SubMConv3d(2, 3, region=REGIONS["cross5"]))
    assert layer.region == REGIONS["cross5"] and layer.weight.shape == (13, 2, 3)


def test_layer_arguments():
    assert snn.SubMConv3d(2, 2, region=KernelRegion.cross(3)).kernel_size is None
    assert snn.SubMConv3d(2, 2, region=KernelRegion.cube(5, 2)).kernel_size == 5
    assert snn.SubMConv3d(2, 2, 5, 2).region == KernelRegion.cube(5, 2)
    with pytest.raises(ValueError, match="not both"):
        snn.SubMConv3d(2, 2, kernel_size=5, region=KernelRegion.cross(3))
    with pytest.raises(TypeError, match="KernelRegion"):
        snn.DepthwiseConv3d(2, region=[(0, 0, 0)])


def _region_network(dtype):
    torch.manual_seed(0)
    layers = [snn.SubMConv3d(4, 6, region=REGIONS["cross5"]), snn.DepthwiseConv3d(6, region=REGIONS["plane_xz"]),
              snn.SubMConv3d(6, 6, region=REGIONS["cube3d2"]), snn.DepthwiseConv3d(6, region=REGIONS["cube3"]),
              snn.SubMConv3d(6, 5, region=REGIONS["custom_no_centre"]), snn.DownConv3d(5, 5),
              snn.SubMConv3d(5, 3, region=REGIONS["masked"])]
    return [layer.to(dtype) for layer in layers]


def _run(engine, layers, coords, feats, backward):
    f = feats.clone().requires_grad_(backward)
    x = SparseTensor(f, coords, stride=2, engine=engine)
    with torch.set_grad_enabled(backward):
        outs = []
        for layer in layers:
            x = layer(x)
            outs.append(x.feats)
    if backward:
        sum((o * torch.linspace(-1, 1, o.numel(), dtype=o.dtype).view_as(o)).sum() for o in outs).backward()
        return outs, f.grad
    return outs, None


@pytest.mark.parametrize("engine,backward", [("spconv", False), ("minkowski", False), ("minkowski", True)])
def test_region_network_same_on_every_engine(engine, backward):
    reason = why_not(engine, "cpu", backward)
    if reason is not None:
        pytest.skip(f"{engine} engine unavailable: {reason}")
    coords = random_coords(2, 10, 2, 0.3, seed=7)
    feats = torch.randn(len(coords), 4, dtype=torch.float32)
    layers = _region_network(torch.float32)
    ref_outs, ref_grad = _run("torch", layers, coords, feats, backward)
    outs, grad = _run(engine, layers, coords, feats, backward)
    for o, r in zip(outs, ref_outs):
        torch.testing.assert_close(o, r, rtol=1e-4, atol=1e-4)
    if backward:
        torch.testing.assert_close(grad, ref_grad, rtol=1e-4, atol=1e-4)
