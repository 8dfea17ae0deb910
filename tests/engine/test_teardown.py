"""The process group outlives nothing that uses it: the DDP model (whose reducer holds the gloo
group) is freed by reference counting when the train mode returns, before the engine destroys
the group. A reference cycle through the trainer (trainer -> hooks -> closures over the trainer
and the checkpointer) kept it alive until the interpreter's shutdown collected it, and gloo's
threads then died under finalisation ("terminate called without an active exception", SIGABRT;
scripts/repeat_ddp_exit.py counts those over repeated 2-process runs)."""
import gc
import weakref

import pytest
import torch
import torch.distributed as dist
from torch import nn

from lib.engine import dist as D
from lib.engine import process as P
from lib.engine.launch import run
from lib.engine.modes import train as train_mode
from tests.engine import standin_main
from tests.engine import standins as S


@pytest.fixture
def one_rank_group(tmp_path):
    """A real gloo group of one process: is_dist() is true, so the train mode wraps DDP."""
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    yield
    if dist.is_initialized():
        dist.destroy_process_group()


def _train_and_watch(tmp_path, monkeypatch):
    """Train the stand-in in this process with the collector off; returns, per DDP model the train
    mode built, whether it was still alive when the engine destroyed the process group."""
    wrapped, alive_at_cleanup = [], []
    prepare = train_mode.prepare_model

    def recording_prepare(model, run_ctx):
        out = prepare(model, run_ctx)
        assert isinstance(out, nn.parallel.DistributedDataParallel)
        wrapped.append(weakref.ref(out))
        return out

    real_cleanup = D.cleanup

    def checking_cleanup():
        alive_at_cleanup.append([ref() is not None for ref in wrapped])
        real_cleanup()

    monkeypatch.setattr(train_mode, "prepare_model", recording_prepare)
    monkeypatch.setattr(P.D, "cleanup", checking_cleanup)
    cfg = standin_main.config(["train.iterations=4", "train.val_every=2", "train.ckpt_every=2"])
    gc.disable()  # only reference counting frees: a cycle would keep the model alive
    try:
        run(cfg, "train", tmp_path / "run", S.build_dataset, S.build_model, S.collate, make_input=S.plain_input)
    finally:
        gc.enable()
    assert len(wrapped) == 1 and not dist.is_initialized()
    assert torch.load(tmp_path / "run" / "last.pth", weights_only=True)["trainer"]["iteration"] == 4
    return alive_at_cleanup[0]


def test_ddp_model_is_freed_before_the_group_is_destroyed(tmp_path, monkeypatch, one_rank_group):
    assert _train_and_watch(tmp_path, monkeypatch) == [False], "the DDP model outlived its process group"


def test_no_reference_cycle_holds_the_trainer(tmp_path, monkeypatch, one_rank_group):
    """The hooks' callables reach the trainer and checkpointer weakly: with the engine's release
    (lib.engine.process.release_run) switched off, reference counting alone frees the DDP model
    when the train mode returns. torch._dynamo is imported beforehand, so torch.fx's own frame
    cycle (see release_run) does not catch this run's frames."""
    import torch._dynamo  # noqa: F401

    monkeypatch.setattr(P, "release_run", lambda error: None)
    assert _train_and_watch(tmp_path, monkeypatch) == [False], "a reference cycle keeps the trainer alive"
