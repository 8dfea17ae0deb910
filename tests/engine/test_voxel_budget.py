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
    padded = 0
    for epoch in (0, 1):
        per_rank = []
        for s in samplers:
            s.set_epoch(epoch)
            per_rank.append([list(b) for b in s])  # what __iter__ yields, as the DataLoader sees it
        steps = {len(batches) for batches in per_rank}
        assert len(steps) == 1  # equal steps on every rank
        seen = []
        for batches in per_rank:
            mine = set()
            for i, batch in enumerate(batches):
                assert counts[batch].sum() <= limit or len(batch) == 1
                if mine & set(batch):
                    # a scene again on the same rank: only as DDP padding, a whole earlier batch repeated
                    assert batch in batches[:i], f"rank yielded {batch} with a repeated scene"
                    padded += 1
                    continue
                mine |= set(batch)
            seen += sorted(mine)
        assert sorted(seen) == list(range(50))  # every scene on exactly one rank, once
    if world > 1:
        assert padded, "the case should need padding for equal steps"
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
