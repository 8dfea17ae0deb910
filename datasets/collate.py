"""Batching of dataset items.

`collate_fn(items)` stacks items into the batch every model input is built from (the batch contract,
docs/ARCHITECTURE.md "Batch"; N voxels of B scenes, rows scene by scene):
  coords        int32 [N, 4]    (batch index, x, y, z) voxel coordinates
  feats         float32 [N, C]  input features
  labels        int64 [N]       voxel labels (lib.IGNORE_INDEX where unknown)
  point_coords  float32 [N, 3]  each voxel's sampled point, augmented frame, metres (items' sampled_points)
  offsets       int64 [B + 1]   voxel rows of scene b: offsets[b]:offsets[b + 1]
  inverse       list of int64 [P_b]    original point -> voxel row within its scene
  point_labels  list of int64 [P_b]    labels of the original points
  points        list of float32 [P_b, 3]  original xyz (metres)
  scene         list of str
The training stream adds `deferred` / `carried` (lists of scene names) when `data.limit_numpoints`
is set: the voxel cap is kept by the engine, in the main process (lib/engine/voxel_budget.py), so
this module only stacks items.
"""
from typing import Sequence

import numpy as np
import torch


def collate_fn(items: Sequence[dict]) -> dict:
    """Stack dataset items into one batch (see the module docstring for the keys)."""
    if not items:
        raise ValueError("collate_fn: empty batch")
    sizes = [len(it["coords"]) for it in items]
    offsets = np.zeros(len(items) + 1, dtype=np.int64)
    np.cumsum(sizes, out=offsets[1:])
    coords = np.empty((offsets[-1], 4), dtype=np.int32)
    for b, it in enumerate(items):
        coords[offsets[b]:offsets[b + 1], 0] = b
        coords[offsets[b]:offsets[b + 1], 1:] = it["coords"]
    return {
        "coords": torch.from_numpy(coords),
        "feats": torch.from_numpy(np.concatenate([it["feats"] for it in items]).astype(np.float32, copy=False)),
        "labels": torch.from_numpy(np.concatenate([it["labels"] for it in items]).astype(np.int64, copy=False)),
        "point_coords": torch.from_numpy(np.concatenate([it["sampled_points"] for it in items]).astype(np.float32, copy=False)),
        "offsets": torch.from_numpy(offsets),
        "inverse": [torch.from_numpy(np.asarray(it["inverse"], dtype=np.int64)) for it in items],
        "point_labels": [torch.from_numpy(np.asarray(it["point_labels"], dtype=np.int64)) for it in items],
        "points": [torch.from_numpy(np.asarray(it["points"], dtype=np.float32)) for it in items],
        "scene": [it["scene"] for it in items],
    }
