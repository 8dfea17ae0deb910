"""Augmentation streams: reproducible from the seed, different across items, epochs and ranks,
and independent of which DataLoader worker loads an item."""
import numpy as np
import torch

import datasets
from data_helpers import needs_real_scannet
from lib.config.schema_data import DataConfig


def _train(root, seed=0, rank=0):
    return datasets.build_dataset(DataConfig(dataset="scannet", root=str(root)), "train", seed=seed, rank=rank)


def _same(a, b):
    return a["coords"].shape == b["coords"].shape and np.array_equal(a["coords"], b["coords"]) \
        and np.array_equal(a["feats"], b["feats"]) and np.array_equal(a["labels"], b["labels"])


@needs_real_scannet
def test_reproducible_and_distinct(scannet_root):
    ds = _train(scannet_root)
    base = ds[3]
    assert _same(base, _train(scannet_root)[3])  # same seed, epoch, rank, index
    ds.set_epoch(1)
    assert not _same(base, ds[3])
    ds.set_epoch(0)
    assert _same(base, ds[3])
    assert not _same(base, _train(scannet_root, rank=1)[3])
    assert not _same(base, _train(scannet_root, seed=1)[3])
    # every (epoch, rank, index) has its own stream
    first_draws = []
    for rank in (0, 1):
        for epoch in (0, 5):
            ranked = _train(scannet_root, rank=rank)
            ranked.set_epoch(epoch)
            first_draws += [ranked.item_rng(i).random() for i in range(len(ranked))]
    assert len(set(first_draws)) == len(first_draws) == 4 * len(ds)


@needs_real_scannet
def test_independent_of_worker_count(scannet_root):
    ds = _train(scannet_root)
    ds.set_epoch(2)
    ds.scene_ids = ds.scene_ids[:4]

    def load(workers):
        loader = torch.utils.data.DataLoader(ds, batch_size=1, num_workers=workers, collate_fn=lambda b: b[0])
        return list(loader)

    in_process, two_workers = load(0), load(2)
    assert all(_same(a, b) for a, b in zip(in_process, two_workers))
    assert not _same(in_process[0], _train(scannet_root)[0])  # epoch 2 differs from epoch 0
