"""Checkpoints: an interrupted write leaves the previous file intact, a full training state
loads with weights_only=True, anything else is refused in one line naming the file."""
import os
import random

import numpy as np
import pytest
import torch

from lib.engine import checkpoint as C


def test_failed_write_keeps_previous_file_and_leaves_no_temp(tmp_path, monkeypatch):
    path = tmp_path / "last.pth"
    C.atomic_save({"model": {"w": torch.ones(3)}}, path)
    real_save = torch.save

    def crash_midway(obj, f, *a, **kw):
        f.write(b"partial bytes of a checkpoint")  # the process dies after writing some bytes
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", crash_midway)
    with pytest.raises(KeyboardInterrupt):
        C.atomic_save({"model": {"w": torch.zeros(3)}}, path)
    monkeypatch.setattr(torch, "save", real_save)
    assert os.listdir(tmp_path) == ["last.pth"]
    assert torch.equal(C.load_checkpoint(path)["model"]["w"], torch.ones(3))


def test_full_training_state_loads_weights_only(tmp_path):
    from lib.engine.ema import ModelEMA
    from lib.engine.optim import IterationScheduler
    from lib.config.schema_train import SchedulerConfig
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    opt = torch.optim.AdamW(model.parameters(), lr=0.01)
    model(torch.randn(5, 3)).sum().backward()
    opt.step()
    sched = IterationScheduler(opt, SchedulerConfig(), 10)
    ema = ModelEMA(model)
    ema.update(model)
    state = {"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
             "scaler": torch.amp.GradScaler("cpu").state_dict(), "ema": ema.state_dict(), "iteration": 7,
             "rng": [C.capture_rng()], "config": {"train": {"iterations": 10, "betas": [0.9, 0.99]}},
             "best": {"mIoU": 0.5, "per_class": {"a": {"iou": None}}}}
    C.atomic_save(state, tmp_path / "ck.pth")
    back = torch.load(tmp_path / "ck.pth", weights_only=True)  # the strict loader itself
    assert back["iteration"] == 7 and back["config"]["train"]["betas"] == [0.9, 0.99]
    model2 = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    model2.load_state_dict(back["model"])
    opt2 = torch.optim.AdamW(model2.parameters(), lr=0.01)
    opt2.load_state_dict(back["optimizer"])
    assert torch.equal(opt2.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])
    assert C.model_state(back) is back["ema"]["module"]


class Arbitrary:
    pass


def test_non_weights_only_pickle_is_refused_in_one_line(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"model": {}, "extra": Arbitrary()}, path)
    with pytest.raises(C.CheckpointError) as info:
        C.load_checkpoint(path)
    message = str(info.value)
    assert str(path) in message and "weights-only" in message and "\n" not in message


def test_missing_and_foreign_files(tmp_path):
    with pytest.raises(C.CheckpointError, match="checkpoint not found"):
        C.load_checkpoint(tmp_path / "none.pth")
    torch.save({"state_dict": {}}, tmp_path / "other.pth")
    with pytest.raises(RuntimeError, match="no 'model' entry"):
        C.load_checkpoint(tmp_path / "other.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a zip file")
    with pytest.raises(RuntimeError, match="junk.pth: cannot load"):
        C.load_checkpoint(tmp_path / "junk.pth")


def test_rng_states_round_trip_through_a_checkpoint(tmp_path):
    state = C.capture_rng()
    C.atomic_save({"model": {}, "rng": state}, tmp_path / "r.pth")
    expected = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    random.seed(123), np.random.seed(123), torch.manual_seed(123)
    C.restore_rng(C.load_checkpoint(tmp_path / "r.pth")["rng"])
    assert (random.random(), float(np.random.rand()), float(torch.rand(1))) == expected
