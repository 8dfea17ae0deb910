"""The torch engine on real geometry: a voxelized ScanNet scan against dense conv3d (float64)."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lib.sparse import SparseTensor
from lib.sparse import nn as snn
from tests.conftest import REAL_DATA
from tests.sparse.dense_ref import canonical_to_conv3d, densify, sample

SCANS = REAL_DATA / "scannet" / "scans"


def _voxelized_scan(voxel_m: float):
    plyfile = pytest.importorskip("plyfile", reason="plyfile reads the ScanNet PLY")
    paths = sorted(SCANS.glob("*/*_vh_clean_2.ply"))
    if not paths:
        pytest.skip(f"no real ScanNet scans under {SCANS}")
    vertex = plyfile.PlyData.read(str(paths[0]))["vertex"]
    xyz = np.stack([vertex["x"], vertex["y"], vertex["z"]], 1)
    rgb = np.stack([vertex["red"], vertex["green"], vertex["blue"]], 1) / 255.0
    grid = np.floor((xyz - xyz.min(0)) / voxel_m).astype(np.int64)
    cells, first = np.unique(grid, axis=0, return_index=True)  # sorted rows, as voxelizers give
    coords = torch.from_numpy(np.concatenate([np.zeros((len(cells), 1), np.int64), cells], 1)).to(torch.int32)
    return coords, torch.from_numpy(rgb[first]).double(), int(cells.max()) + 2


def test_real_scan_submanifold_and_down_match_dense():
    coords, feats, size = _voxelized_scan(0.08)
    size += size % 2  # even grid: the dense k2s2 conv then covers every coarse cell
    torch.manual_seed(0)
    sub = snn.SubMConv3d(3, 4, 3).double()
    down = snn.DownConv3d(4, 2).double()
    x = SparseTensor(feats, coords, engine="torch")
    y = sub(x)
    z = down(y)

    dense_x = densify(feats, coords, 1, size, 1)
    dense_y = F.conv3d(dense_x, canonical_to_conv3d(sub.weight, 3), padding=1)
    torch.testing.assert_close(y.feats, sample(dense_y, coords, 1))
    dense_y_sparse = densify(y.feats, coords, 1, size, 1)  # conv of the sparse output, as the layer does
    dense_z = F.conv3d(dense_y_sparse, canonical_to_conv3d(down.weight, 2), stride=2)
    torch.testing.assert_close(z.feats, sample(dense_z, z.coords, 2))
    assert len(coords) > 1000 and len(z) < len(coords)
