"""The voxel cap of training batches (`data.limit_numpoints`), kept in two places:

1. `VoxelBudgetBatchSampler` packs each rank's scenes into batches by the dataset's `voxel_counts()`
   (voxels without augmentation): a batch closes when the next scene would pass the cap, so every
   scene is in exactly one batch per epoch and nothing is dropped.
2. `CappedStream` (main process, any training loader) guards against augmentation growing a batch
   past the cap: the scenes past it are deferred to the next step of the same epoch, and whatever
   is still deferred when the loader's epoch ends gets extra steps before the next epoch begins
   (as many on every rank: ranks with fewer repeat their last batch). So every scene is trained on
   once per epoch however many DataLoader workers load it, and the deferred scenes are part of the
   stream's checkpointed state (`state_dict`), so a resume continues the same sequence.
"""
import logging
import warnings
from typing import Callable, Sequence

import numpy as np
from torch.utils.data import Sampler

from lib.engine.data import EpochStream
from lib.engine.dist import all_reduce_max

log = logging.getLogger("voxseg")


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


def split_at_cap(sizes: Sequence[int], limit: int) -> int:
    """How many leading items fit in `limit` voxels (at least one)."""
    total = 0
    for n, size in enumerate(sizes):
        total += size
        if total > limit and n > 0:
            return n
    return len(sizes)


class CappedStream(EpochStream):
    """An `EpochStream` whose loader yields lists of items (its collate is `list`); this stream
    keeps the voxel cap and collates in the main process (module docstring, 2.).

    Each step takes exactly one loader batch (so ranks stay in step): the deferred scenes first,
    then the new ones, cut at the cap; the rest waits for the next step. At the loader's epoch end
    the deferred scenes fill extra steps, their number agreed over ranks (a collective: every rank
    draws from its stream at the same steps, as the trainer does). Batches gain "carried" (scenes
    deferred earlier, trained now) and "deferred" (scenes of this step's input moved to a later
    step). A deferred scene is held as its loader key (index, seed): reloading it by key gives the
    same item, which is how `load_state_dict` restores it.
    """

    def __init__(self, loader, limit_numpoints: int, collate_fn: Callable):
        if limit_numpoints <= 0:
            raise ValueError("CappedStream: limit_numpoints must be positive")
        super().__init__(loader)
        self.limit, self.collate_fn = int(limit_numpoints), collate_fn
        self.pending = []  # [[key, item or None]]: deferred scenes of this epoch (None: not reloaded yet)
        self.tail = None  # after the loader's epoch end: the remaining steps, [(repeat?, [[key, item]])]
        self.last = []  # keys of the last batch (what a rank with fewer tail steps repeats)
        self._keys = None

    def _open_epoch(self):
        super()._open_epoch()
        self._keys = iter(self.loader.batch_sampler)  # the same keys, in the order the loader loads them

    def __next__(self):
        while True:
            if self.tail is not None:
                if self.tail:
                    repeat, entries = self.tail.pop(0)
                    return self._emit(entries, carried=[] if repeat else entries, deferred=[])
                self.tail = None
                self.next_epoch()
                continue
            items = self.next_loader_batch()
            if items is None:
                self.tail = self._tail_steps()
                continue
            return self._take(self.pending, [[tuple(k), it] for k, it in zip(next(self._keys), items)])

    def _take(self, carried, new):
        """A step of the deferred scenes then the new ones, cut at the cap; the rest is deferred."""
        entries = self._resolve(carried + new)
        keep = split_at_cap([len(it["coords"]) for _, it in entries], self.limit)
        step, self.pending = entries[:keep], entries[keep:]
        fresh = {id(e) for e in new}
        return self._emit(step, carried=step[:len(carried)], deferred=[e for e in self.pending if id(e) in fresh])

    def _tail_steps(self) -> list:
        entries, self.pending, steps = self._resolve(self.pending), [], []
        while entries:
            keep = split_at_cap([len(it["coords"]) for _, it in entries], self.limit)
            steps.append((False, entries[:keep]))
            entries = entries[keep:]
        count = int(all_reduce_max(len(steps)))  # every rank takes as many steps
        return steps + [(True, [[k, None] for k in self.last]) for _ in range(count - len(steps))]

    def _resolve(self, entries: list) -> list:
        """Entries with their items, reloading by key those a resume left as None."""
        for entry in entries:
            if entry[1] is None:
                self.set_dataset_epoch()
                entry[1] = self.loader.dataset[entry[0]]
        return entries

    def _emit(self, entries, carried, deferred):
        items = [it for _, it in self._resolve(entries)]
        if len(items) == 1 and len(items[0]["coords"]) > self.limit:
            warnings.warn(f"limit_numpoints={self.limit}: scene {items[0]['scene']} alone has "
                          f"{len(items[0]['coords'])} voxels; it gets a batch of its own")
        batch = self.collate_fn(items)
        batch["carried"] = [it["scene"] for _, it in carried]
        batch["deferred"] = [it["scene"] for _, it in deferred]
        if batch["deferred"]:
            log.info("limit_numpoints=%d: scene(s) %s deferred to a later step of this epoch",
                     self.limit, ", ".join(batch["deferred"]))
        self.last = [k for k, _ in entries]
        return batch

    def state_dict(self) -> dict:
        keys = lambda entries: [list(k) for k, _ in entries]  # noqa: E731
        return {**super().state_dict(), "pending": keys(self.pending), "last": [list(k) for k in self.last],
                "tail": None if self.tail is None else [{"repeat": r, "keys": keys(e)} for r, e in self.tail]}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        entries = lambda keys: [[tuple(int(v) for v in k), None] for k in keys]  # noqa: E731
        self.pending = entries(state["pending"])
        self.last = [k for k, _ in entries(state["last"])]
        tail = state["tail"]
        self.tail = None if tail is None else [(bool(t["repeat"]), entries(t["keys"])) for t in tail]
