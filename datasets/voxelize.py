"""Sparse voxelization of a point cloud that keeps the point -> voxel map.

One sort of a packed integer key per scene (no np.unique over rows, which is ~50x slower here).
The key packs three cell indices of at most MAX_CELLS each into int64, so it cannot overflow: a
cloud wider than that (a stray point far away) raises VoxelGridError instead of merging voxels.
"""
from dataclasses import dataclass
from typing import Optional

import numpy as np

from lib import IGNORE_INDEX

MAX_CELLS = 2**21 - 1  # cells per axis: 3 x 21 bits fit an int64 key (42 km at 2 cm voxels)


class VoxelGridError(ValueError):
    """The points span more voxels along an axis than a key can hold, or the voxel size is not > 0."""


@dataclass
class Voxels:
    """coords int32 [M, 3] (non-negative voxel indices), inverse int64 [P] (point -> voxel row),
    order int64 [P] (points sorted by voxel), starts int64 [M] (first sorted position of each voxel),
    counts int64 [M] (points per voxel), pick int64 [M] (one representative point per voxel)."""

    coords: np.ndarray
    inverse: np.ndarray
    order: np.ndarray
    starts: np.ndarray
    counts: np.ndarray
    pick: np.ndarray


def voxelize(xyz: np.ndarray, voxel_size: float, rng: Optional[np.random.Generator] = None) -> Voxels:
    """Group points xyz [P, 3] (metres) into the cells floor(xyz / voxel_size), shifted so that the
    lowest occupied cell along each axis is 0. Column-contiguous xyz (an [3, P] array transposed,
    as apply_affine returns) is fastest.

    With `rng`, each voxel's representative point is drawn uniformly among its points (training);
    without, it is the first point of the voxel in sort order (used only for bookkeeping in mean mode).
    """
    if len(xyz) == 0:
        raise ValueError("cannot voxelize an empty point cloud")
    if not voxel_size > 0:
        raise VoxelGridError(f"voxel size must be > 0, got {voxel_size}")
    # column-wise work (an axis-0 reduction of [P, 3] is ~20x slower here); truncating the
    # non-negative offsets from the lowest occupied cell is floor() at a fraction of its cost
    scale = np.float32(1.0 / voxel_size)
    scaled = [xyz[:, i] * scale for i in range(3)]
    lows = [np.floor(c.min()) for c in scaled]
    spans = [float(np.floor(c.max())) - float(low) for c, low in zip(scaled, lows)]  # float64: no overflow
    for axis, span in enumerate(spans):
        if not span < MAX_CELLS:  # also NaN / inf
            raise VoxelGridError(f"points span {span:.4g} voxels of {voxel_size} m along {'xyz'[axis]} (limit "
                                 f"{MAX_CELLS}): a point far from the others?")
    extent = [int(span) + 1 for span in spans]
    # int32 keys sort faster; fall back to int64 for grids of more than 2^31 cells
    dtype = np.int32 if extent[0] * extent[1] * extent[2] < 2**31 else np.int64
    grid = []
    for c, low, size in zip(scaled, lows, extent):
        c -= low
        cell = c.astype(dtype)
        # float32 rounding can lift a point just below a cell boundary of the top cell to `size`,
        # whose key would alias another cell: clamp it back into its true (top) cell
        np.minimum(cell, size - 1, out=cell)
        grid.append(cell)
    del scaled
    key = grid[0]  # reuse the buffers: every array allocated here costs page faults
    key *= extent[1]
    key += grid[1]
    key *= extent[2]
    key += grid[2]
    order = np.argsort(key)  # quicksort: the order inside a voxel does not matter
    sorted_key = key.take(order)
    new_voxel = np.empty(len(key), dtype=bool)
    new_voxel[0] = True
    np.not_equal(sorted_key[1:], sorted_key[:-1], out=new_voxel[1:])
    starts = np.flatnonzero(new_voxel)
    counts = np.diff(starts, append=len(key))
    inverse = np.empty(len(key), dtype=np.int64)
    inverse[order] = np.cumsum(new_voxel) - 1
    first = order.take(starts)
    if rng is not None:
        offset = rng.random(len(starts))
        offset *= counts
        pick = order.take(starts + offset.astype(np.int64))
    else:
        pick = first
    coords = np.empty((len(starts), 3), dtype=np.int32)
    coords[:, 0] = key.take(first) // (extent[1] * extent[2])
    coords[:, 1] = grid[1].take(first)
    coords[:, 2] = grid[2].take(first)
    return Voxels(coords, inverse, order, starts, counts, pick)


def voxel_mean(vox: Voxels, values: np.ndarray) -> np.ndarray:
    """Mean of per-point `values` [P, C] over each voxel -> float32 [M, C] (column by column)."""
    values = values.reshape(len(vox.inverse), -1)
    out = np.empty((len(vox.starts), values.shape[1]), dtype=np.float32)
    for c in range(values.shape[1]):
        sums = np.add.reduceat(values[:, c].astype(np.float64)[vox.order], vox.starts)
        out[:, c] = sums / vox.counts
    return out


def voxel_majority(vox: Voxels, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Most frequent valid label of each voxel (ties: the smallest class), IGNORE_INDEX when a voxel
    holds no valid label. labels int [P] in [0, num_classes) or IGNORE_INDEX -> int64 [M].

    Label-pure voxels (most of them) are read off directly; only mixed voxels are counted."""
    ranked = np.where(labels == IGNORE_INDEX, num_classes, labels)[vox.order]  # ignore sorts last
    low = np.minimum.reduceat(ranked, vox.starts)
    high = np.maximum.reduceat(ranked, vox.starts)
    out = low.astype(np.int64)
    mixed = np.flatnonzero(low != high)
    if len(mixed):
        # points of mixed voxels, renumbered 0..len(mixed)-1, counted per (voxel, label)
        sizes = vox.counts[mixed]
        member = np.repeat(np.arange(len(mixed)), sizes)
        rows = np.arange(len(member)) + np.repeat(vox.starts[mixed] - (np.cumsum(sizes) - sizes), sizes)
        votes = np.bincount(member * (num_classes + 1) + ranked[rows], minlength=len(mixed) * (num_classes + 1))
        votes = votes.reshape(len(mixed), num_classes + 1)[:, :num_classes]
        out[mixed] = votes.argmax(axis=1)  # a mixed voxel holds at least one valid label
    out[out == num_classes] = IGNORE_INDEX
    return out
