"""Checkpoints: an interrupted write leaves the previous file intact, a full training state
loads with weights_only=True, anything else is refused in one line naming the file; the
Checkpointer round-trips every piece (GradScaler included) and restores RNG states onto the CPU
whatever device the run uses; a checkpoint of another model stops the resume in one line before
any piece changes; format 1 is migrated."""
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
    C.atomic_save({"format": C.FORMAT_VERSION, "model": {}, "rng": state}, tmp_path / "r.pth")
    expected = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    random.seed(123), np.random.seed(123), torch.manual_seed(123)
    C.restore_rng(C.load_checkpoint(tmp_path / "r.pth")["rng"])
    assert (random.random(), float(np.random.rand()), float(torch.rand(1))) == expected


class Counter:
    """A checkpoint piece: state_dict / load_state_dict of one integer."""

    def __init__(self, name="", value=0):
        self.name, self.value = name, value

    def state_dict(self):
        return {"value": self.value} if self.value else {}

    def load_state_dict(self, state):
        self.value = state["value"]


def test_checkpointer_round_trips_every_piece_with_a_cpu_grad_scaler(tmp_path):
    from lib.engine.trainer import Trainer
    from lib.config.schema_train import TrainConfig
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    scaler.scale(model(torch.randn(4, 3)).sum()).backward()
    scaler.step(opt)
    scaler.update()
    trainer = Trainer(model, None, opt, None, None, None, 10, TrainConfig(), torch.device("cpu"), scaler)
    trainer.iteration = 3
    hook = Counter("validation", 7)
    C.Checkpointer(tmp_path, trainer, [hook], {"seed": 0}, model=model, optimizer=opt, scaler=scaler).save("last")
    expected = torch.rand(3)  # the draw right after the save

    model2 = torch.nn.Linear(3, 2)
    opt2 = torch.optim.SGD(model2.parameters(), lr=0.1, momentum=0.9)
    scaler2 = torch.amp.GradScaler("cpu", init_scale=1.0)
    trainer2 = Trainer(model2, None, opt2, None, None, None, 10, TrainConfig(), torch.device("cpu"), scaler2)
    hook2 = Counter("validation")
    torch.manual_seed(99)
    ckpt = C.Checkpointer(tmp_path, trainer2, [hook2], {}, model=model2, optimizer=opt2,
                          scaler=scaler2).load(tmp_path / "last.pth")
    assert ckpt["format"] == 2 and trainer2.iteration == 3 and hook2.value == 7
    assert scaler2.get_scale() == scaler.get_scale() and scaler2.state_dict() == scaler.state_dict()
    assert torch.equal(model2.weight, model.weight)
    assert torch.equal(opt2.state_dict()["state"][0]["momentum_buffer"], opt.state_dict()["state"][0]["momentum_buffer"])
    assert torch.equal(torch.rand(3), expected)  # RNG restored


@pytest.mark.filterwarnings("ignore:for (weight|bias). copying from a non-meta parameter")
def test_resume_onto_another_device_restores_rng_from_cpu_states(tmp_path):
    # Regression (issue 12): resume loaded with map_location=<run device>, so RNG states landed
    # on that device, where torch.set_rng_state / .numpy() refuse them. Here the run's model lives
    # on the `meta` device (a device-placement stand-in for CUDA): the pieces load there, the
    # RNG states must still come back from the CPU.
    from lib.engine.trainer import Trainer
    from lib.config.schema_train import TrainConfig
    model = torch.nn.Linear(3, 2)
    trainer = Trainer(model, None, None, None, None, None, 10, TrainConfig(), torch.device("cpu"))
    trainer.iteration = 5
    C.Checkpointer(tmp_path, trainer, [], {}, model=model).save("last")
    expected = (random.random(), float(np.random.rand()), float(torch.rand(1)))

    meta_model = torch.nn.Linear(3, 2, device="meta")
    meta_trainer = Trainer(meta_model, None, None, None, None, None, 10, TrainConfig(), torch.device("meta"))
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    C.Checkpointer(tmp_path, meta_trainer, [], {}, model=meta_model).load(tmp_path / "last.pth")
    assert meta_trainer.iteration == 5
    assert (random.random(), float(np.random.rand()), float(torch.rand(1))) == expected


def test_resume_of_another_class_count_is_one_line_and_changes_nothing(tmp_path):
    from lib.engine.trainer import Trainer
    from lib.config.schema_train import TrainConfig
    model = torch.nn.Linear(3, 5)  # 5 classes
    trainer = Trainer(model, None, None, None, None, None, 10, TrainConfig(), torch.device("cpu"))
    trainer.iteration = 4
    C.Checkpointer(tmp_path, trainer, [], {}, model=model).save("last")

    model2 = torch.nn.Linear(3, 2)  # the run now has 2 classes
    before = {k: v.clone() for k, v in model2.state_dict().items()}
    trainer2 = Trainer(model2, None, None, None, None, None, 10, TrainConfig(), torch.device("cpu"))
    with pytest.raises(C.CheckpointError) as err:
        C.Checkpointer(tmp_path, trainer2, [], {}, model=model2).load(tmp_path / "last.pth")
    assert str(err.value) == (f"{tmp_path / 'last.pth'}: weights do not fit Linear (another model or class count?): "
                              "2 shape mismatch(es): weight (5, 3) vs model (2, 3), bias (5,) vs model (2,)")
    assert trainer2.iteration == 0 and all(torch.equal(v, before[k]) for k, v in model2.state_dict().items())


def v1_layout(v2: dict) -> dict:
    """The layout format 1 (the trainer before format 2) wrote: everything at the top level."""
    return {"model": v2["model"], "optimizer": v2["optimizer"], "scheduler": v2["scheduler"],
            "scaler": v2["scaler"], "ema": v2["ema"], "iteration": v2["trainer"]["iteration"],
            "rng": v2["trainer"]["rng"], "config": v2["config"], "format": 1,
            "best": v2["hooks"]["validation"]["best"], "best_iteration": v2["hooks"]["validation"]["best_iteration"],
            "world_size": v2["trainer"]["world_size"]}


def test_format_1_is_migrated():
    v1 = {"format": 1, "model": {"w": torch.ones(1)}, "optimizer": {}, "scheduler": {}, "scaler": None,
          "ema": None, "iteration": 4, "rng": [{"torch": torch.zeros(1)}], "config": {}, "best": {"mIoU": 0.5},
          "best_iteration": 2, "world_size": 1}
    v2 = C.migrate(v1)
    assert v2["format"] == 2 and v2["trainer"]["iteration"] == 4 and v2["trainer"]["world_size"] == 1
    assert v2["hooks"] == {"validation": {"best": {"mIoU": 0.5}, "best_iteration": 2}}
    assert "iteration" not in v2 and torch.equal(v2["model"]["w"], torch.ones(1))
    assert v1_layout(v2) == {**v1}
    with pytest.raises(C.CheckpointError, match="format 3 is newer"):
        C.migrate({"format": 3, "model": {}}, "x.pth")
