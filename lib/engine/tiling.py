"""Scans larger than a memory budget: the voxels cut into overlapping tiles in the horizontal plane,
the model run on one tile at a time, its logits averaged where tiles overlap.

Every voxel belongs to the core of exactly one tile (recursive bisection of the xy plane at the
median voxel, always along the longer side, until each tile fits). A tile's model input is its
core widened by `overlap + context` voxels on every side; its logits are kept for the core widened
by `overlap`, and voxels kept by several tiles get the mean of their logits. The `context` band is
input only: it gives the voxels near a cut the neighbours they have in the whole scan. A convolution
network's output at a voxel depends only on the input within its receptive field, so with
`overlap + context` at least the receptive radius a tile's kept logits are those of the whole scan
(up to the order of floating-point sums); with less, voxels near cuts differ (measured in
tests/engine/test_tiling.py and in the README). Attention over serialized patches (PTv3) sees other
patches in a tile than in the whole scan: agreement there is measured, not exact.
"""
from typing import NamedTuple

import numpy as np
import torch

from lib.errors import UserError
from lib.model_contract import parse_output


class TilingError(UserError):
    """No tiling satisfies the voxel budget (the message names the knobs)."""


class Tile(NamedTuple):
    rows: np.ndarray  # int64 [T]: the voxel rows of the tile's model input
    keep: np.ndarray  # bool [T]: rows whose logits this tile contributes (core + overlap band)


def _inside(xy: np.ndarray, lo: np.ndarray, hi: np.ndarray, margin: int) -> np.ndarray:
    return np.all((xy >= lo - margin) & (xy < hi + margin), axis=1)


def _cut(values: np.ndarray):
    """A threshold splitting `values` into two non-empty parts (< t, >= t) near the median, or None."""
    lo, hi = values.min(), values.max()
    if lo == hi:
        return None
    t = np.partition(values, len(values) // 2)[len(values) // 2]
    return t if t > lo else lo + 1


def plan_tiles(coords: np.ndarray, max_voxels: int, overlap: int = 0, context: int = 0) -> list[Tile]:
    """Tiles of voxels `coords` (int [M, 3], x y z voxel indices) whose inputs hold at most `max_voxels`
    voxels each; one tile of everything when that fits or `max_voxels` <= 0. `overlap`, `context`:
    band widths in voxels (module docstring). TilingError when a single voxel column with its
    bands already exceeds `max_voxels`."""
    coords = np.asarray(coords)
    count = len(coords)
    if max_voxels <= 0 or count <= max_voxels:
        return [Tile(np.arange(count, dtype=np.int64), np.ones(count, dtype=bool))]
    xy = coords[:, :2].astype(np.int64)
    margin = int(overlap) + int(context)
    tiles = []
    # (core box [lo, hi) in voxels, rows inside the widened box: a superset of any sub-box's rows)
    stack = [(xy.min(axis=0), xy.max(axis=0) + 1, np.arange(count, dtype=np.int64))]
    while stack:
        lo, hi, candidates = stack.pop()
        here = xy[candidates]
        rows = candidates[_inside(here, lo, hi, margin)]
        core = rows[_inside(xy[rows], lo, hi, 0)]
        if len(core) == 0:
            continue
        if len(rows) <= max_voxels:
            tiles.append(Tile(rows, _inside(xy[rows], lo, hi, int(overlap))))
            continue
        extent = xy[core].max(axis=0) - xy[core].min(axis=0)
        for axis in np.argsort(-extent, kind="stable"):
            t = _cut(xy[core, axis])
            if t is not None:
                break
        else:
            raise TilingError(f"predict.max_voxels={max_voxels}: one column of voxels with its "
                              f"{margin}-voxel band (predict.tile_overlap + predict.tile_context) already holds "
                              f"{len(rows)} voxels; raise the budget or narrow the bands")
        left_hi, right_lo = hi.copy(), lo.copy()
        left_hi[axis], right_lo[axis] = t, t
        stack.append((right_lo, hi, rows))
        stack.append((lo, left_hi, rows))
    return tiles


def tile_item(item: dict, rows: np.ndarray) -> dict:
    """The dataset item restricted to voxel `rows` (voxel keys only; its points are not needed)."""
    return {"coords": item["coords"][rows], "feats": item["feats"][rows], "labels": item["labels"][rows],
            "sampled_points": item["sampled_points"][rows], "inverse": np.arange(len(rows), dtype=np.int64),
            "point_labels": np.zeros(0, dtype=np.int64), "points": np.zeros((0, 3), dtype=np.float32),
            "scene": item["scene"]}


@torch.no_grad()
def tiled_logits(model, item: dict, tiles: list[Tile], collate_fn, make_input, device, on_tile=None) -> torch.Tensor:
    """Voxel logits float32 [M, K] on the CPU of a dataset item, computed tile by tile and averaged
    where tiles overlap. `on_tile(i, run)`: called for each tile with `run()` doing its forward
    (progress bars and memory meters wrap it); default: run()."""
    model.eval()
    total = count = None
    for i, tile in enumerate(tiles):
        batch = collate_fn([tile_item(item, tile.rows) if len(tiles) > 1 else item])

        def forward(batch=batch):
            return parse_output(model(make_input(batch, device))).logits.float().cpu()

        logits = on_tile(i, forward) if on_tile else forward()
        if total is None:
            total = torch.zeros(len(item["coords"]), logits.shape[1])
            count = torch.zeros(len(item["coords"]), 1)
        kept = torch.from_numpy(tile.rows[tile.keep])
        total.index_add_(0, kept, logits[torch.from_numpy(tile.keep)])
        count.index_add_(0, kept, torch.ones(len(kept), 1))
    return total / count
