"""The input of point backbones: one sampled point per voxel of a batch, in batch order.

Built by the engine from a collated batch (the batch contract in docs/ARCHITECTURE.md) when a
model declares `input_type = "points"` (models/contract.py). Rows are the batch's voxel rows, so
logits map back to every original point through the same point->voxel maps as a voxel model's.
"""
from dataclasses import dataclass

import torch


@dataclass
class PointBatch:
    """coord   float32 [N, 3]  augmented continuous coordinates of each voxel's sampled point (metres)
    grid_coord int32 [N, 3]  voxel coordinates (units of the voxel size), as in the SparseTensor
    feat    float32 [N, C]  input features
    offset  int64 [B + 1]   rows of scene b are offset[b]:offset[b + 1] (offset[0] = 0)
    voxel_size float        metres per grid unit
    """
    coord: torch.Tensor
    grid_coord: torch.Tensor
    feat: torch.Tensor
    offset: torch.Tensor
    voxel_size: float

    @property
    def batch(self) -> torch.Tensor:
        """int64 [N]: the scene index of every row."""
        counts = self.offset[1:] - self.offset[:-1]
        return torch.repeat_interleave(torch.arange(len(counts), device=self.offset.device), counts)

    @property
    def num_scenes(self) -> int:
        return len(self.offset) - 1

    def to(self, device) -> "PointBatch":
        return PointBatch(self.coord.to(device, non_blocking=True), self.grid_coord.to(device, non_blocking=True),
                          self.feat.to(device, non_blocking=True), self.offset.to(device, non_blocking=True),
                          self.voxel_size)

    def sparse_coords(self) -> torch.Tensor:
        """int32 [N, 4] (batch, x, y, z): the SparseTensor coordinates of these rows."""
        return torch.cat([self.batch.to(torch.int32)[:, None], self.grid_coord.to(torch.int32)], dim=1)
