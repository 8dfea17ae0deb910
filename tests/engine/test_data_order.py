"""Data order: shards cover an epoch, evaluation counts each scene once, a seek lands on the batch
the uninterrupted stream would draw next, item augmentation does not depend on the world size."""
import torch

from tests.engine import standins as S
from lib.engine.data import EpochStream, ShardSampler, make_loader


def test_training_shards_are_equal_and_cover_the_epoch():
    shards = [[i for i, _ in ShardSampler(7, r, 3, shuffle=True, seed=1)] for r in range(3)]
    assert [len(s) for s in shards] == [3, 3, 3]  # padded to equal counts for DDP
    assert set(sum(shards, [])) == set(range(7))


def test_evaluation_shards_count_every_scene_once():
    shards = [[i for i, _ in ShardSampler(7, r, 3, shuffle=False)] for r in range(3)]
    assert sorted(sum(shards, [])) == list(range(7))


def test_epochs_reshuffle_and_item_seeds_ignore_world_size():
    s = ShardSampler(50, shuffle=True, seed=0)
    first = list(s)
    s.set_epoch(1)
    assert [i for i, _ in first] != [i for i, _ in s]
    two = [dict(ShardSampler(50, r, 2, shuffle=True, seed=0)) for r in range(2)]
    assert {**two[0], **two[1]} == dict(first)  # same (index -> seed) for 1 and 2 processes


def test_seek_continues_the_same_batches():
    ds = S.ToyScenes(n=5)
    stream = EpochStream(make_loader(ds, 2, 0, S.collate, seed=3))
    reference = [next(stream) for _ in range(7)]  # 2 batches per epoch (drop_last), several epochs
    resumed = EpochStream(make_loader(ds, 2, 0, S.collate, seed=3))
    resumed.seek(3)
    for expected in reference[3:]:
        got = next(resumed)
        assert got["scene"] == expected["scene"]
        assert torch.equal(got["feats"], expected["feats"])  # the seeded jitter too


class EpochAware(S.ToyScenes):
    def set_epoch(self, epoch):
        self.seen_epoch = epoch


def test_dataset_set_epoch_is_called():
    ds = EpochAware(n=4)
    stream = EpochStream(make_loader(ds, 2, 0, S.collate))
    for _ in range(5):
        next(stream)
    assert ds.seen_epoch == 2
