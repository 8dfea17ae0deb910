"""Data order and augmentation seeding that survive resumption and do not depend on the number
of processes or workers.

Every item is fetched with python/numpy/torch RNGs seeded from (seed, epoch, dataset index), so a
scene's augmentation in a given epoch is the same whether it is loaded by 1 or N processes, by the
main process or a worker, and before or after a resume. The shuffled order of an epoch is a
function of (seed, epoch) only.
"""
import random

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler


def item_seed(seed: int, epoch: int, index: int) -> int:
    """A 32-bit seed for one item of one epoch."""
    return int(np.random.SeedSequence([seed, epoch, index]).generate_state(1)[0])


class SeededItems(Dataset):
    """Wraps a dataset so every item is drawn with the global RNGs seeded per item.

    Keys are (index, seed) pairs from `ShardSampler`; `item(index)` / `get_view(index, ...)` seed
    from (base_seed, epoch 0, index) for inference. The global RNG states are put back after each
    item, so loading in the main process does not disturb the training stream (dropout etc.).
    """

    def __init__(self, dataset, base_seed: int = 0):
        self.dataset = dataset
        self.base_seed = base_seed

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, key):
        index, seed = key
        return self._seeded(seed, self.dataset.__getitem__, index)

    def item(self, index: int):
        return self._seeded(item_seed(self.base_seed, 0, index), self.dataset.__getitem__, index)

    def get_view(self, index: int, *view):
        return self._seeded(item_seed(self.base_seed, 0, index), self.dataset.get_view, index, *view)

    @staticmethod
    def _seeded(seed, fn, *args):
        py_state, np_state = random.getstate(), np.random.get_state()
        with torch.random.fork_rng(devices=[]):
            random.seed(seed)
            np.random.seed(seed)
            torch.manual_seed(seed)
            try:
                return fn(*args)
            finally:
                random.setstate(py_state)
                np.random.set_state(np_state)


class ShardSampler(Sampler):
    """Yields (index, seed) keys of this rank's share of an epoch.

    shuffle=True (training): the epoch's permutation comes from (seed, epoch); it is padded by
    wrapping around so every rank gets the same count (DDP needs equal step counts), then rank r
    takes positions r, r + world, ...; `start` skips that many of this rank's samples (resume).
    shuffle=False (evaluation): indices r, r + world, ... without padding, so a confusion matrix
    summed over ranks counts every scene exactly once.
    """

    def __init__(self, size: int, rank: int = 0, world: int = 1, shuffle: bool = True, seed: int = 0):
        if size == 0:
            raise ValueError("ShardSampler: the dataset is empty")
        self.size, self.rank, self.world = size, rank, world
        self.shuffle, self.seed = shuffle, seed
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int, start: int = 0):
        self.epoch, self.start = epoch, start

    def _indices(self) -> list:
        if not self.shuffle:
            return list(range(self.rank, self.size, self.world))
        g = torch.Generator().manual_seed(self.seed * 100003 + self.epoch)
        order = torch.randperm(self.size, generator=g).tolist()
        per_rank = -(-self.size // self.world)
        order = (order * self.world)[: per_rank * self.world]
        return order[self.rank::self.world]

    def __len__(self):
        return len(self._indices()) - self.start

    def __iter__(self):
        for index in self._indices()[self.start:]:
            yield index, item_seed(self.seed, self.epoch, index)


class KeyedBatches(Sampler):
    """Batches of (index, seed) keys from a batch sampler of dataset indices that has
    `set_epoch(epoch)` (e.g. `VoxelBudgetBatchSampler`); `start` skips that many batches (resume)."""

    def __init__(self, batches, seed: int = 0):
        self.batches, self.seed = batches, seed
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int, start: int = 0):
        self.epoch, self.start = epoch, start
        self.batches.set_epoch(epoch)

    def __len__(self):
        return len(self.batches) - self.start

    def __iter__(self):
        for i, batch in enumerate(self.batches):
            if i >= self.start:
                yield [(index, item_seed(self.seed, self.epoch, index)) for index in batch]


def make_loader(dataset, batch_size: int, num_workers: int, collate_fn, rank: int = 0,
                world: int = 1, shuffle: bool = True, seed: int = 0, batch_sampler=None) -> DataLoader:
    """A DataLoader over `SeededItems(dataset)` with a `ShardSampler`, or with `batch_sampler`
    (indices per batch, already sharded for this rank) when one is given.

    Shuffled (training) loaders drop the last partial batch so training steps always see full
    batches. The loader's own generator is fixed, so creating an iterator never draws from the
    global torch RNG.
    """
    items = SeededItems(dataset, seed)
    generator = torch.Generator().manual_seed(seed)
    if batch_sampler is not None:
        return DataLoader(items, batch_sampler=KeyedBatches(batch_sampler, seed),
                          num_workers=num_workers, collate_fn=collate_fn, generator=generator)
    sampler = ShardSampler(len(dataset), rank, world, shuffle, seed)
    return DataLoader(items, batch_size=batch_size, sampler=sampler, num_workers=num_workers,
                      collate_fn=collate_fn, drop_last=shuffle, generator=generator)


class EpochStream:
    """Endless batches from a training loader, epoch after epoch.

    Before each epoch it calls set_epoch on the sampler and, when it has one, on the dataset.
    `seek(step)` maps a global batch count to (epoch, batch in epoch), so a resumed run continues
    with the very batch the interrupted run would have drawn next. The batch count of an epoch may
    vary by epoch (voxel-budget packing); `steps_in(epochs)` sums it. `state_dict()` is the
    position ({"epoch", "consumed": loader batches drawn in that epoch}); the trainer checkpoints
    it per rank.
    """

    def __init__(self, loader: DataLoader):
        self.loader = loader
        self.steps_per_epoch = self._steps(0)  # of the first epoch
        if self.steps_per_epoch == 0:
            from lib.config import ConfigError
            raise ConfigError(f"data.batch_size={loader.batch_size} is larger than the {len(loader.sampler)} "
                              "training scene(s) of each process (a training batch is never partial): lower "
                              "data.batch_size, or use fewer processes")
        self.epoch = 0
        self.consumed = 0  # loader batches drawn in this epoch
        self._iter = None

    def _set_epoch(self, epoch: int, start_batch: int):
        if isinstance(self.loader.batch_sampler, KeyedBatches):
            self.loader.batch_sampler.set_epoch(epoch, start=start_batch)
        else:
            self.loader.sampler.set_epoch(epoch, start=start_batch * self.loader.batch_size)

    def _steps(self, epoch: int) -> int:
        self._set_epoch(epoch, 0)
        return len(self.loader.batch_sampler)

    def steps_in(self, epochs: int) -> int:
        """Batches in the first `epochs` epochs."""
        return sum(self._steps(e) for e in range(epochs))

    def seek(self, batches_done: int):
        """Position the stream after `batches_done` batches (0 = the very beginning)."""
        epoch = 0
        while batches_done >= (steps := self._steps(epoch)):
            batches_done -= steps
            epoch += 1
        self.epoch, self.consumed = epoch, batches_done
        self._iter = None

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "consumed": self.consumed}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.consumed = int(state["epoch"]), int(state["consumed"])
        self._iter = None

    def set_dataset_epoch(self):
        inner = getattr(self.loader.dataset, "dataset", None)
        if hasattr(inner, "set_epoch"):
            inner.set_epoch(self.epoch)

    def _open_epoch(self):
        self._set_epoch(self.epoch, self.consumed)
        self.set_dataset_epoch()
        self._iter = iter(self.loader)

    def next_loader_batch(self):
        """The loader's next batch in this epoch, or None at the epoch's end."""
        if self._iter is None:
            self._open_epoch()
        try:
            batch = next(self._iter)
        except StopIteration:
            return None
        self.consumed += 1
        return batch

    def next_epoch(self):
        self.epoch, self.consumed, self._iter = self.epoch + 1, 0, None

    def __next__(self):
        while (batch := self.next_loader_batch()) is None:
            self.next_epoch()
        return batch
