"""Grid clustering of points: the cells of a coarser grid (stride 2, 4, ...) and per-cell reductions.

Used for grid pooling (PTv3) and as the sampling of Point Transformer's transition down: on
surface scans, doubling the cell keeps about a quarter of the points (the published stride 4).
"""
from dataclasses import dataclass

import torch


def offset_to_batch(offset: torch.Tensor) -> torch.Tensor:
    """int64 [N]: scene index of every row, from offset int64 [B + 1]."""
    counts = offset[1:] - offset[:-1]
    return torch.repeat_interleave(torch.arange(len(counts), device=offset.device), counts)


def batch_to_offset(batch: torch.Tensor, num_scenes: int) -> torch.Tensor:
    """offset int64 [B + 1] from a sorted scene index per row."""
    counts = torch.bincount(batch, minlength=num_scenes)
    return torch.cat([counts.new_zeros(1), counts.cumsum(0)])


@dataclass
class GridClusters:
    """cluster int64 [N] (fine row -> coarse row), grid_coord int32 [M, 3] (coarse cells, in units of
    the coarse cell), batch int64 [M], offset int64 [B + 1], counts int64 [M] (fine rows per cell).
    Coarse rows are sorted by (scene, x, y, z)."""
    cluster: torch.Tensor
    grid_coord: torch.Tensor
    batch: torch.Tensor
    offset: torch.Tensor
    counts: torch.Tensor


def grid_cluster(grid_coord: torch.Tensor, offset: torch.Tensor, stride: int = 2) -> GridClusters:
    """Group rows whose cells floor(grid_coord / stride) are equal within one scene.

    grid_coord int [N, 3] non-negative cell indices; offset int64 [B + 1].
    """
    if stride < 1:
        raise ValueError(f"grid_cluster needs stride >= 1, got {stride}")
    batch = offset_to_batch(offset)
    cell = torch.div(grid_coord.long(), stride, rounding_mode="floor")
    ext = cell.max(0).values + 1 if len(cell) else cell.new_ones(3)
    key = ((batch * ext[0] + cell[:, 0]) * ext[1] + cell[:, 1]) * ext[2] + cell[:, 2]
    ukey, cluster, counts = torch.unique(key, return_inverse=True, return_counts=True)
    rest, z = ukey.div(ext[2], rounding_mode="floor"), ukey % ext[2]
    rest, y = rest.div(ext[1], rounding_mode="floor"), rest % ext[1]
    b, x = rest.div(ext[0], rounding_mode="floor"), rest % ext[0]
    coarse = torch.stack([x, y, z], 1).to(torch.int32)
    return GridClusters(cluster, coarse, b, batch_to_offset(b, len(offset) - 1), counts)


def segment_mean(values: torch.Tensor, cluster: torch.Tensor, num: int) -> torch.Tensor:
    """[M, C]: mean of the rows of values [N, C] in each of the `num` clusters."""
    out = values.new_zeros(num, values.shape[1]).index_add_(0, cluster, values)
    counts = torch.bincount(cluster, minlength=num).clamp_min(1).to(values.dtype)
    return out / counts[:, None]


def segment_max(values: torch.Tensor, cluster: torch.Tensor, num: int) -> torch.Tensor:
    """[M, C]: elementwise max of the rows of values [N, C] in each of the `num` clusters (each non-empty)."""
    index = cluster[:, None].expand_as(values)
    return values.new_zeros(num, values.shape[1]).scatter_reduce(0, index, values, "amax", include_self=False)
