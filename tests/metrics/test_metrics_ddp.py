"""The DDP all-reduce of the confusion matrix: 2 gloo processes give the single-process matrix."""
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from lib import IGNORE_INDEX
from lib.metrics import SegEvaluator

NAMES = ["a", "b", "c"]


def _data():
    gen = torch.Generator().manual_seed(0)
    pred = torch.randint(0, 3, (600,), generator=gen)
    target = torch.randint(0, 3, (600,), generator=gen)
    target[::7] = IGNORE_INDEX
    pred[::11] = IGNORE_INDEX
    return pred, target


def _rank_main(rank: int, world: int, init_file: str, out_file: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        pred, target = _data()
        ev = SegEvaluator(NAMES)
        # uneven shards, as DDP samplers produce at the end of an epoch
        cut = 250
        part = slice(0, cut) if rank == 0 else slice(cut, None)
        ev.update(pred[part], target[part])
        ev.all_reduce()
        torch.save(ev.confusion.matrix, f"{out_file}.{rank}")
    finally:
        dist.destroy_process_group()


def test_all_reduce_over_two_gloo_processes_equals_single_process(tmp_path):
    out = str(tmp_path / "matrix")
    mp.spawn(_rank_main, args=(2, str(tmp_path / "init"), out), nprocs=2, join=True)
    pred, target = _data()
    single = SegEvaluator(NAMES)
    single.update(pred, target)
    for rank in range(2):
        assert torch.equal(torch.load(f"{out}.{rank}"), single.confusion.matrix)
    assert single.confusion.matrix.sum() == 600


def test_all_reduce_without_process_group_is_a_no_op():
    ev = SegEvaluator(NAMES)
    ev.update(torch.tensor([0, 1]), torch.tensor([0, 2]))
    before = ev.confusion.matrix.clone()
    ev.all_reduce()
    assert torch.equal(ev.confusion.matrix, before)
