"""Fixed-size patches of a serialized batch, for attention inside each patch (PTv3).

A scene of n >= P points is cut into ceil(n / P) patches of exactly P consecutive points; the last
starts at n - P, so it overlaps its predecessor instead of holding a short remainder, and every
patch is full (no mask: flash kernels apply). Each point takes its output from the patch numbered
floor(i / P) (the last one for the tail). A scene of n < P points is one patch, padded with a mask.
"""
from dataclasses import dataclass

import torch


@dataclass
class Patches:
    """full int64 [F, P]: sequence rows of the full patches; small int64 [S, W] (rows, pads point
    at a real row) with small_mask bool [S, W] (True = real); owner int64 [N]: the row of each
    sequence position in cat(full_out.flatten(0, 1), small_out.flatten(0, 1))."""
    full: torch.Tensor
    small: torch.Tensor
    small_mask: torch.Tensor
    owner: torch.Tensor


def patch_partition(offset: torch.Tensor, patch_size: int) -> Patches:
    """Patches of the serialized sequence whose scenes are offset int64 [B + 1] (rows in curve order)."""
    if patch_size < 1:
        raise ValueError(f"patch_size must be >= 1, got {patch_size}")
    dev = offset.device
    size = offset[1:] - offset[:-1]
    big = size >= patch_size
    npatch = torch.where(big, (size + patch_size - 1) // patch_size, 0)
    scene = torch.repeat_interleave(torch.arange(len(size), device=dev), npatch)
    first_patch = npatch.cumsum(0) - npatch
    j = torch.arange(len(scene), device=dev) - first_patch[scene]
    start = torch.minimum(j * patch_size, size[scene] - patch_size)
    ar = torch.arange(patch_size, device=dev)
    full = (offset[:-1][scene] + start)[:, None] + ar

    small_scenes = torch.nonzero((size > 0) & ~big).flatten()
    width = int(size[small_scenes].max()) if len(small_scenes) else 1
    aw = torch.arange(width, device=dev)
    small_mask = aw[None] < size[small_scenes][:, None]
    small = offset[:-1][small_scenes][:, None] + torch.where(small_mask, aw[None], 0)

    row_scene = torch.repeat_interleave(torch.arange(len(size), device=dev), size)
    local = torch.arange(len(row_scene), device=dev) - offset[:-1][row_scene]
    pj = torch.minimum(local // patch_size, (npatch[row_scene] - 1).clamp_min(0))
    col = local - torch.minimum(pj * patch_size, size[row_scene] - patch_size)
    owner_big = (first_patch[row_scene] + pj) * patch_size + col
    small_slot = torch.full((len(size),), -1, dtype=torch.long, device=dev)
    small_slot[small_scenes] = torch.arange(len(small_scenes), device=dev)
    owner_small = len(scene) * patch_size + small_slot[row_scene] * width + local
    owner = torch.where(big[row_scene], owner_big, owner_small)
    return Patches(full, small, small_mask, owner)
