"""The voxel-budget batch sampler: every scene once per epoch under the cap, equal steps on every
rank, and a resumed stream that lands on the same batch although epochs differ in length."""
import numpy as np
import pytest
import torch

from lib.engine.data import EpochStream, make_loader
from lib.engine.voxel_budget import VoxelBudgetBatchSampler
from tests.engine import standins as S


@pytest.mark.parametrize("world", [1, 3])
def test_budget_sampler_covers_every_scene_once_per_epoch(world):
    rng = np.random.default_rng(0)
    counts = rng.integers(10, 100, 50)
    counts[7] = 400  # above the cap: alone
    limit = 200
    with pytest.warns(UserWarning, match="scene index 7"):
        samplers = [VoxelBudgetBatchSampler(counts, limit, rank=r, world=world, seed=3) for r in range(world)]
    for epoch in (0, 1):
        seen = []
        for s in samplers:
            s.set_epoch(epoch)
            batches = list(s)
            assert len(batches) == len(samplers[0])  # equal steps on every rank
            for batch in batches:
                assert counts[batch].sum() <= limit or len(batch) == 1
        for r, s in enumerate(samplers):
            packed = s.pack(s.order()[r::world])
            seen += [i for b in packed for i in b]
        assert sorted(seen) == list(range(50))
    samplers[0].set_epoch(0)
    e0 = list(samplers[0])
    samplers[0].set_epoch(1)
    assert list(samplers[0]) != e0


def test_budget_stream_seek_lands_on_the_same_batch():
    ds = S.ToyScenes(n=9)
    counts = np.random.default_rng(0).integers(5, 40, len(ds))

    def stream():
        sampler = VoxelBudgetBatchSampler(counts, 50, max_batch_size=4, seed=2)
        return EpochStream(make_loader(ds, 4, 0, S.collate, seed=2, batch_sampler=sampler))

    reference = stream()
    lengths = [reference._steps(e) for e in range(4)]
    assert len(set(lengths)) > 1, "the test needs epochs of different lengths"
    assert reference.steps_in(3) == sum(lengths[:3])
    reference.seek(0)
    batches = [next(reference) for _ in range(sum(lengths[:3]))]
    for start in (1, lengths[0], lengths[0] + 1, sum(lengths[:2]) + 1):
        resumed = stream()
        resumed.seek(start)
        for expected in batches[start:start + 3]:
            got = next(resumed)
            assert got["scene"] == expected["scene"]
            assert torch.equal(got["feats"], expected["feats"])
