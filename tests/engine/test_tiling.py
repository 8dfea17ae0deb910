"""Tiles of a large scan (lib/engine/tiling.py): every voxel kept by the tiles that hold it, inputs
within the budget, and tiled logits equal to the whole scan's where the bands cover the network's
receptive field (a sparse U-Net with a stride-2 level, against its own whole-scan forward)."""
import numpy as np
import pytest
import torch

from datasets.collate import collate_fn
from lib.engine.inputs import InputMaker
from lib.engine.tiling import TilingError, plan_tiles, tiled_logits
from lib.sparse import nn as snn


def _room(n=6000, seed=0):
    """Unique voxel coordinates of a box-shaped 'room': floor, two walls and a few blobs."""
    rng = np.random.default_rng(seed)
    floor = np.stack([rng.integers(0, 60, n), rng.integers(0, 40, n), np.zeros(n, int)], 1)
    wall = np.stack([rng.integers(0, 60, n // 3), np.zeros(n // 3, int), rng.integers(0, 20, n // 3)], 1)
    blob = rng.normal([30, 20, 5], 4, (n // 3, 3)).round().astype(int).clip(0)
    return np.unique(np.concatenate([floor, wall, blob]), axis=0).astype(np.int32)


def test_tiles_partition_the_voxels_and_respect_the_budget():
    coords = _room()
    tiles = plan_tiles(coords, max_voxels=1500, overlap=2, context=3)
    assert len(tiles) > 3
    kept = np.zeros(len(coords), int)
    core = np.zeros(len(coords), int)
    for tile in tiles:
        assert len(tile.rows) <= 1500 and len(np.unique(tile.rows)) == len(tile.rows)
        kept[tile.rows[tile.keep]] += 1
    assert kept.min() >= 1  # every voxel predicted by at least one tile
    # with no bands, the kept sets are the cores: each voxel exactly once
    for tile in plan_tiles(coords, max_voxels=1500):
        assert tile.keep.all()
        core[tile.rows] += 1
    assert np.array_equal(core, np.ones(len(coords), int))
    assert (kept > 1).sum() > 0  # the overlap band is kept twice


def test_one_tile_when_the_scan_fits_and_an_error_when_nothing_can():
    coords = _room(2000)
    (tile,) = plan_tiles(coords, max_voxels=len(coords))
    assert np.array_equal(tile.rows, np.arange(len(coords))) and tile.keep.all()
    (tile,) = plan_tiles(coords, max_voxels=0)
    assert len(tile.rows) == len(coords)
    with pytest.raises(TilingError, match="predict.max_voxels=50: one column"):
        plan_tiles(coords, max_voxels=50, overlap=5, context=20)


class _UNet(torch.nn.Module):
    """Receptive radius: 1 (3^3) + 2 x 3 (two 3^3 at stride 2, inside a 2^3 cell) + 1 voxel."""

    def __init__(self, cin=3, width=8, classes=5):
        super().__init__()
        self.inp = snn.SubMConv3d(cin, width)
        self.down = snn.DownConv3d(width, width)
        self.mid = torch.nn.Sequential(snn.SubMConv3d(width, width), snn.ReLU(), snn.SubMConv3d(width, width))
        self.up = snn.UpConv3d(width, width)
        self.out = snn.SubMConv3d(width, classes)

    def forward(self, x):
        a = self.inp(x)
        b = self.up(self.mid(self.down(a)))
        return self.out(snn.ReLU()(b)).feats


def _item(coords, seed=0):
    feats = np.random.default_rng(seed).normal(size=(len(coords), 3)).astype(np.float32)
    return {"coords": coords, "feats": feats, "labels": np.zeros(len(coords), np.int64),
            "sampled_points": coords.astype(np.float32), "inverse": np.arange(len(coords)),
            "point_labels": np.zeros(len(coords), np.int64), "points": coords.astype(np.float32), "scene": "room"}


@pytest.mark.parametrize("overlap", [0, 3])
def test_tiled_logits_equal_the_whole_scan_when_bands_cover_the_receptive_field(overlap):
    torch.manual_seed(0)
    model = _UNet().eval()
    coords = _room()
    item = _item(coords)
    make_input = InputMaker("torch", 1.0).for_model(model)
    whole = tiled_logits(model, item, plan_tiles(coords, 0), collate_fn, make_input, "cpu")
    tiles = plan_tiles(coords, max_voxels=2500, overlap=overlap, context=10 - overlap)
    assert len(tiles) > 2
    tiled = tiled_logits(model, item, tiles, collate_fn, make_input, "cpu")
    torch.testing.assert_close(tiled, whole, rtol=1e-5, atol=1e-5)
    # without the context band, voxels near the cuts see fewer neighbours: the check above can fail
    cut = tiled_logits(model, item, plan_tiles(coords, 2500), collate_fn, make_input, "cpu")
    assert (cut - whole).abs().max() > 1e-3


def test_on_tile_wraps_every_forward():
    model = _UNet().eval()
    coords = _room(3000)
    seen = []
    tiles = plan_tiles(coords, 1200, 1, 1)
    tiled_logits(model, _item(coords), tiles, collate_fn, InputMaker("torch", 1.0).for_model(model), "cpu",
                 on_tile=lambda i, run: seen.append(i) or run())
    assert seen == list(range(len(tiles)))
