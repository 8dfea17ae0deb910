"""Points -> memory: the linear fit on crops of a real scan predicts the measured peak at a voxel count
it was not fitted on; crops keep the batch's per-point maps consistent; budgets parse."""
import numpy as np
import pytest
import torch
from torch import nn

from lib.profiler.fit import PointsModel, crop_batch, fit, measure_pass, measure_points_model
from lib.profiler.report import static_bytes
from lib.units import parse_bytes
from tests.conftest import REAL_DATA

SCAN = REAL_DATA / "scannet" / "scans" / "scene0000_00" / "scene0000_00_vh_clean_2.ply"


def _scan_batch(voxel_size):
    plyfile = pytest.importorskip("plyfile", reason="reading the real scan needs plyfile")
    if not SCAN.is_file():
        pytest.skip(f"real scan not found: {SCAN} (set VOXSEG_REAL_DATA)")
    v = plyfile.PlyData.read(str(SCAN))["vertex"].data
    xyz = np.stack([v["x"], v["y"], v["z"]], 1).astype(np.float64)
    cells, inverse = np.unique(np.floor((xyz - xyz.min(0)) / voxel_size).astype(np.int64), axis=0,
                               return_inverse=True)
    n = len(cells)
    rgb = np.stack([v["red"], v["green"], v["blue"]], 1).astype(np.float32) / 255
    return {"coords": torch.from_numpy(np.concatenate([np.zeros((n, 1), np.int64), cells], 1)).int(),
            "feats": torch.from_numpy(rgb[np.unique(inverse.ravel(), return_index=True)[1]]),
            "labels": torch.zeros(n, dtype=torch.int64), "offsets": torch.tensor([0, n]),
            "inverse": [torch.from_numpy(inverse.ravel())], "points": [torch.from_numpy(xyz.astype(np.float32))],
            "point_labels": [torch.zeros(len(xyz), dtype=torch.int64)], "scene": ["scene0000_00"]}


def _make_input(batch, device):
    from lib.sparse import SparseTensor

    return SparseTensor(batch["feats"].to(device), batch["coords"].to(device), engine="torch")


def test_fit_predicts_an_unseen_voxel_count_within_15_percent():
    from lib.sparse import nn as snn

    batch = _scan_batch(0.08)
    torch.manual_seed(0)
    model = nn.Sequential(snn.SubMConv3d(3, 16), snn.BatchNorm(16), snn.ReLU(), snn.DownConv3d(16, 32),
                          snn.SubMConv3d(32, 32), snn.ReLU(), snn.UpConv3d(32, 16), snn.Linear(16, 5))
    points, samples = measure_points_model(model, batch, _make_input, "cpu", fractions=(0.2, 0.4, 0.6))
    assert [s[0] for s in samples] == sorted(s[0] for s in samples) and samples[-1][0] < len(batch["coords"])
    measured = static_bytes(model) + measure_pass(model, batch, _make_input, "cpu")
    assert points.predict(len(batch["coords"])) == pytest.approx(measured, rel=0.15)
    assert points.bytes_per_voxel > 16 * 4  # at least one 16-channel activation per voxel


def test_crop_keeps_a_slab_and_the_point_maps():
    batch = _scan_batch(0.1)
    part = crop_batch(batch, 0.5)
    n = len(part["coords"])
    assert n == round(0.5 * len(batch["coords"]))
    assert part["offsets"].tolist() == [0, n] and len(part["feats"]) == len(part["labels"]) == n
    # every kept point maps to a kept voxel, and to the same cell as before the crop
    inv = part["inverse"][0]
    assert int(inv.max()) < n and len(inv) == len(part["points"][0]) == len(part["point_labels"][0])
    cell = np.floor((part["points"][0].numpy() - batch["points"][0].numpy().min(0)) / 0.1)
    assert np.array_equal(cell.astype(np.int64), part["coords"][inv, 1:].numpy().astype(np.int64))
    # a slab: the kept voxels lie below every dropped voxel along one horizontal axis
    kept = set(map(tuple, part["coords"].tolist()))
    dropped = torch.tensor([c for c in batch["coords"].tolist() if tuple(c) not in kept])
    assert any(part["coords"][:, a].max() <= dropped[:, a].min() for a in (1, 2))


def test_linear_fit_and_largest_fitting_count():
    pm = fit([(100, 1100.0), (200, 2100.0), (400, 4100.0)])
    assert pm.base_bytes == pytest.approx(100.0) and pm.bytes_per_voxel == pytest.approx(10.0)
    assert pm.largest_fitting(1100, headroom=0) == 100 and pm.largest_fitting(1109, headroom=0) == 100
    assert pm.largest_fitting(1110, headroom=0) == 101
    assert pm.largest_fitting(2000) == 180  # 5% of the budget kept free: (1900 - 100) / 10
    with pytest.raises(ValueError, match="does not even hold"):
        PointsModel(5000.0, 10.0).largest_fitting(4000)
    with pytest.raises(ValueError, match="two or more"):
        fit([(100, 1.0), (100, 2.0)])


def test_byte_sizes():
    assert parse_bytes("24GB") == 24 * 10**9 and parse_bytes("22GiB") == 22 * 2**30
    assert parse_bytes("512 MiB") == 512 * 2**20 and parse_bytes(1000) == 1000 and parse_bytes("1.5kb") == 1500
    for bad in ("24XB", "GB", "", "-3GB"):
        with pytest.raises(ValueError, match="not a byte size"):
            parse_bytes(bad)
