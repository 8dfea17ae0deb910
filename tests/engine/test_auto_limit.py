"""`data.limit_numpoints: auto` is measured once, by the train mode on rank 0, and every rank trains
under that number (ranks with different caps pack different numbers of batches and hang); the
measurement leaves the training it precedes unchanged."""
import torch
import torch.multiprocessing as mp

from lib.engine.dist import free_port
from lib.engine.launch import run
from tests.engine import standin_main
from tests.engine import standins as S

DROPOUT = "model.args={dropout: 0.5}"  # training draws from the torch stream the measurement must not move


def test_two_ranks_train_under_rank_0s_measurement(tmp_path):
    mp.spawn(S.auto_limit_rank_worker, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert r0["measured"] == [0] and r1["measured"] == []  # rank 1 would have measured 80
    assert r0["kept"] == r1["kept"] == [(50, 50)]
    assert r0["iterations"] == r1["iterations"] == 4
    saved = torch.load(tmp_path / "run" / "last.pth", weights_only=True)
    assert saved["config"]["data"]["limit_numpoints"] == 50  # the checkpoint records the number used


def test_measuring_leaves_the_training_unchanged(tmp_path):
    """A run with `auto` (really measured here, on the CPU) ends with the same weights as a run
    given the measured number: the measurement's own model, batch and random draws do not leak."""
    auto = run(standin_main.config(["data.limit_numpoints=auto", "data.memory_budget=4MB", "train.iterations=4", DROPOUT]),
               "train", tmp_path / "auto", S.build_dataset, S.build_model, S.collate, make_input=S.plain_input)
    saved = torch.load(tmp_path / "auto" / "last.pth", weights_only=True)
    limit = saved["config"]["data"]["limit_numpoints"]
    assert isinstance(limit, int) and limit > 0
    fixed = run(standin_main.config([f"data.limit_numpoints={limit}", "train.iterations=4", DROPOUT]),
                "train", tmp_path / "fixed", S.build_dataset, S.build_model, S.collate, make_input=S.plain_input)
    again = torch.load(tmp_path / "fixed" / "last.pth", weights_only=True)
    assert auto["iterations"] == fixed["iterations"] == 4
    for name, value in saved["model"].items():
        assert torch.equal(value, again["model"][name]), name


def test_a_resume_keeps_the_recorded_limit(tmp_path, monkeypatch):
    """The resumed stream's position counts batches packed under the first run's cap: a resume does
    not measure again, it takes the number last.pth recorded."""
    from lib.engine import auto_limit

    recipe = ["data.limit_numpoints=auto", "data.memory_budget=4MB", "train.iterations=4", "train.ckpt_every=2"]
    monkeypatch.setattr(auto_limit, "measure_limit", lambda *a: (50, "stand-in measurement"))
    run(standin_main.config(recipe + ["train.stop_at=2"]), "train", tmp_path, S.build_dataset, S.build_model,
        S.collate, make_input=S.plain_input)
    monkeypatch.setattr(auto_limit, "measure_limit", lambda *a: (80, "a measurement that differs"))
    run(standin_main.config(recipe), "train", tmp_path, S.build_dataset, S.build_model, S.collate, resume=True,
        make_input=S.plain_input)
    saved = torch.load(tmp_path / "last.pth", weights_only=True)
    assert saved["trainer"]["iteration"] == 4 and saved["config"]["data"]["limit_numpoints"] == 50
