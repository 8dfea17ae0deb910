"""Batching of dataset items, and the two ways the voxel cap `limit_numpoints` is kept.

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
`LimitedCollate` adds `deferred` / `carried` (lists of scene names).

Overflow, i.e. a batch with more than `limit_numpoints` voxels, is never dropped silently:
1. The trainer packs each rank's scenes into batches whose un-augmented voxel counts
   (dataset.voxel_counts()) fit the cap (lib/engine/voxel_budget.py): every scene is in exactly
   one batch per epoch.
2. `LimitedCollate(limit)` guards any loader: when a batch is still over the cap (augmentation can
   grow a scene), the scenes past the cap are deferred to the next batch that this collate object
   (one per worker process) builds, and named in batch["deferred"]; scenes joining a batch that way
   are named in batch["carried"]. Scenes still deferred when a worker ends its epoch are lost for
   that epoch only, and were announced by a warning when deferred.
"""
import warnings
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


def split_at_cap(sizes: Sequence[int], limit: int) -> int:
    """How many leading items fit in `limit` voxels (at least one)."""
    total = 0
    for n, size in enumerate(sizes):
        total += size
        if total > limit and n > 0:
            return n
    return len(sizes)


class LimitedCollate:
    """collate_fn with a voxel cap that defers overflow scenes to the next batch (module docstring)."""

    def __init__(self, limit_numpoints: int):
        self.limit = int(limit_numpoints)
        self.pending: list[dict] = []

    def __call__(self, items: Sequence[dict]) -> dict:
        carried = [it["scene"] for it in self.pending]
        items = self.pending + list(items)
        if self.limit > 0:
            keep = split_at_cap([len(it["coords"]) for it in items], self.limit)
            if keep == 1 and len(items[0]["coords"]) > self.limit:
                warnings.warn(f"limit_numpoints={self.limit}: scene {items[0]['scene']} alone has "
                              f"{len(items[0]['coords'])} voxels; it gets a batch of its own")
        else:
            keep = len(items)
        items, self.pending = items[:keep], items[keep:]
        if self.pending:
            warnings.warn(f"limit_numpoints={self.limit}: deferring scene(s) "
                          f"{', '.join(it['scene'] for it in self.pending)} to the next batch")
        batch = collate_fn(items)
        batch["deferred"] = [it["scene"] for it in self.pending]
        batch["carried"] = carried
        return batch
