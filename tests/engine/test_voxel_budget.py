"""The voxel-budget batch sampler: every scene once per epoch under the cap, equal steps on every
rank, and a resumed stream that lands on the same batch although epochs differ in length."""
import numpy as np
import pytest
import torch

from lib.engine.data import EpochStream, make_loader
from lib.engine.voxel_budget import CappedStream, VoxelBudgetBatchSampler, split_at_cap
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


def test_split_at_cap():
    assert split_at_cap([5, 5, 5], 12) == 2
    assert split_at_cap([20, 1], 12) == 1  # a scene alone over the cap still makes a batch
    assert split_at_cap([4, 4], 8) == 2


LIMIT = 70


def capped_stream(workers: int):
    ds = S.GrowingScenes()
    sampler = VoxelBudgetBatchSampler(ds.voxel_counts(), LIMIT, 4, seed=0)
    return CappedStream(make_loader(ds, 4, workers, list, seed=0, batch_sampler=sampler), LIMIT, S.collate)


def epochs_of(stream, epochs: int) -> list:
    """[(epoch, batch)] until the stream enters epoch `epochs`."""
    out = []
    while True:
        batch = next(stream)
        if stream.epoch >= epochs:
            return out
        out.append((stream.epoch, batch))


def test_capped_stream_trains_every_scene_once_per_epoch_with_workers():
    # Two workers: the deferral happens in the main process, so no worker's epoch end drops a
    # deferred scene (the old per-worker collate lost 2 of these 12 scenes in epoch 0).
    batches = epochs_of(capped_stream(workers=2), 2)
    assert any(b["deferred"] for _, b in batches), "augmentation must push some batch past the cap"
    for epoch in (0, 1):
        scenes = [s for e, b in batches if e == epoch for s in b["scene"]]
        assert sorted(scenes) == [f"scene{i:02d}" for i in range(12)], epoch
    for _, b in batches:
        assert len(b["coords"]) <= LIMIT or len(b["scene"]) == 1
    deferred = [s for _, b in batches for s in b["deferred"]]
    assert sorted(deferred) == sorted(s for _, b in batches for s in b["carried"])
    # the same steps as loading in the main process
    assert [b["scene"] for _, b in epochs_of(capped_stream(workers=0), 2)] == [b["scene"] for _, b in batches]


def test_capped_stream_resume_with_a_deferred_scene_continues_the_sequence(tmp_path):
    reference = capped_stream(workers=0)
    states, batches = [], []
    for _ in range(19):  # two epochs and a bit
        batches.append(next(reference))
        torch.save(reference.state_dict(), tmp_path / f"{len(batches)}.pt")  # a checkpoint after each step
        states.append(torch.load(tmp_path / f"{len(batches)}.pt", weights_only=True))
    carrying = [i for i, s in enumerate(states[:-3]) if s["pending"]]
    in_tail = [i for i, s in enumerate(states[:-3]) if s["tail"]]
    assert carrying and in_tail, "the case needs a checkpoint holding a deferred scene and one in an epoch's tail"
    for i in carrying[:2] + in_tail[:1]:
        resumed = capped_stream(workers=0)
        resumed.load_state_dict(states[i])
        for expected in batches[i + 1:i + 4]:
            got = next(resumed)
            assert got["scene"] == expected["scene"] and got["carried"] == expected["carried"]
            assert torch.equal(got["feats"], expected["feats"])


def test_capped_stream_ranks_take_equal_steps_and_cover_the_epoch(tmp_path):
    """Two gloo ranks whose epochs end with different numbers of deferred scenes: the ranks agree
    on the tail steps (the shorter repeats its last batch), so their epochs change at the same
    step, and the ranks together train every scene in each epoch."""
    import torch.multiprocessing as mp

    mp.spawn(S.capped_rank_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1)]
    assert [step[0] for step in ranks[0]] == [step[0] for step in ranks[1]]  # epochs change in step
    epochs = sorted({step[0] for step in ranks[0]})[:-1]  # the last may be cut short
    assert epochs, "24 steps should cover an epoch"
    for epoch in epochs:
        scenes = {s for steps in ranks for e, names, _, _ in steps if e == epoch for s in names}
        assert scenes == {f"scene{i:02d}" for i in range(16)}, epoch
    repeats = [sum(1 for e, _, carried, tail in steps if tail and not carried) for steps in ranks]
    assert any(repeats), "the case needs a rank with fewer tail steps than the other"
