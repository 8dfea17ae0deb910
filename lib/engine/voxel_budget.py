"""Packing each rank's scenes into batches that respect a voxel cap (`data.limit_numpoints`).

Batches of a fixed scene count blow up memory when a few large scenes meet; this sampler closes a
batch when the next scene would pass the cap, so every scene is trained on exactly once per epoch
and nothing is dropped. Scene sizes come from the dataset's `voxel_counts()` (voxels without
augmentation); augmentation that grows a scene past the cap is left to the collate's guard.
"""
import warnings
from typing import Sequence

import numpy as np
from torch.utils.data import Sampler


class VoxelBudgetBatchSampler(Sampler):
    """Batches of dataset indices whose voxel counts sum to at most `limit_numpoints`.

    Each epoch: a permutation from (seed, epoch) (or 0..n-1 when shuffle is False) is dealt to the
    ranks round-robin (rank r takes positions r, r + world, ...), then each rank packs its share in
    order, closing a batch when the next scene would pass the cap or the batch holds
    `max_batch_size` scenes. A scene alone above the cap gets a batch of its own (a warning names
    it). Every rank computes every rank's packing and pads its list by repeating its own first
    batches, so all ranks take the same number of steps (DDP); the count may differ by epoch.
    """

    def __init__(self, voxel_counts: Sequence[int], limit_numpoints: int, max_batch_size: int = 0,
                 rank: int = 0, world: int = 1, shuffle: bool = True, seed: int = 0):
        if len(voxel_counts) == 0:
            raise ValueError("VoxelBudgetBatchSampler: the dataset is empty")
        if limit_numpoints <= 0:
            raise ValueError("VoxelBudgetBatchSampler: limit_numpoints must be positive")
        self.counts = np.asarray(voxel_counts, dtype=np.int64)
        self.limit, self.max_batch = int(limit_numpoints), int(max_batch_size)
        self.rank, self.world, self.shuffle, self.seed = rank, world, shuffle, seed
        self.epoch = 0
        for index in np.flatnonzero(self.counts > self.limit):
            warnings.warn(f"limit_numpoints={self.limit}: scene index {index} has {self.counts[index]} voxels; "
                          "it gets a batch of its own")

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def pack(self, indices: np.ndarray) -> list[list[int]]:
        """Greedy packing of `indices`, in order, under the cap."""
        batches, batch, total = [], [], 0
        for index in indices.tolist():
            size = int(self.counts[index])
            full = self.max_batch > 0 and len(batch) >= self.max_batch
            if batch and (total + size > self.limit or full):
                batches.append(batch)
                batch, total = [], 0
            batch.append(index)
            total += size
        if batch:
            batches.append(batch)
        return batches

    def order(self) -> np.ndarray:
        """This epoch's order of all scenes, before it is dealt to the ranks."""
        n = len(self.counts)
        return np.random.default_rng([self.seed, self.epoch]).permutation(n) if self.shuffle else np.arange(n)

    def _batches(self) -> list[list[int]]:
        order = self.order()
        packed = [self.pack(order[r::self.world]) for r in range(self.world)]
        steps = max(len(p) for p in packed)
        mine = packed[self.rank]
        if not mine:  # fewer scenes than ranks: borrow a scene so this rank can still step
            mine = [[int(order[self.rank % len(order)])]]
        return [mine[i % len(mine)] for i in range(steps)]

    def __len__(self) -> int:
        return len(self._batches())

    def __iter__(self):
        return iter(self._batches())
