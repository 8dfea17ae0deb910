"""Schedules at points whose value follows from their definitions, and optimizer options."""
import pytest
import torch

from lib.config.schema_train import OptimizerConfig, SchedulerConfig
from lib.engine.optim import IterationScheduler, build_optimizer, lr_factor


def sched(**kw):
    cfg = SchedulerConfig()
    for k, v in kw.items():
        setattr(cfg, k, v)
    return cfg


def test_poly_cosine_constant_shapes():
    assert lr_factor(sched(name="poly", power=0.9), 0, 100) == 1.0
    assert lr_factor(sched(name="poly", power=0.9), 50, 100) == pytest.approx(0.5 ** 0.9)
    assert lr_factor(sched(name="poly", power=0.9), 100, 100) == 0.0
    assert lr_factor(sched(name="cosine"), 50, 100) == pytest.approx(0.5)
    assert lr_factor(sched(name="cosine", min_lr_factor=0.1), 100, 100) == pytest.approx(0.1)
    assert lr_factor(sched(name="constant"), 77, 100) == 1.0


def test_step_milestones():
    cfg = sched(name="step", milestones=[10, 20], gamma=0.5)
    assert [lr_factor(cfg, i, 30) for i in (0, 9, 10, 19, 20, 29)] == [1, 1, 0.5, 0.5, 0.25, 0.25]


def test_linear_warmup_multiplies_the_schedule():
    cfg = sched(name="constant", warmup_iters=10, warmup_start_factor=0.0)
    assert [lr_factor(cfg, i, 100) for i in (0, 5, 10)] == [0.0, 0.5, 1.0]
    ratio = sched(name="poly", power=1.0, warmup_ratio=0.1, warmup_start_factor=0.0)
    assert lr_factor(ratio, 5, 100) == pytest.approx(0.5 * 0.95)


def test_onecycle_rises_to_peak_then_anneals():
    cfg = sched(name="onecycle", onecycle_pct_start=0.25, onecycle_div_factor=10.0)
    assert lr_factor(cfg, 0, 100) == pytest.approx(0.1)
    assert lr_factor(cfg, 25, 100) == pytest.approx(1.0)
    assert lr_factor(cfg, 100, 100) == pytest.approx(0.0, abs=1e-12)
    values = [lr_factor(cfg, i, 100) for i in range(101)]
    assert values.index(max(values)) == 25


def test_scheduler_sets_lr_and_round_trips_state():
    model = torch.nn.Linear(2, 2)
    opt = build_optimizer(model, OptimizerConfig(name="sgd", lr=0.2))
    s = IterationScheduler(opt, sched(name="poly", power=1.0), 10)
    for _ in range(4):
        s.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.2 * 0.6)
    opt2 = build_optimizer(model, OptimizerConfig(name="sgd", lr=0.2))
    s2 = IterationScheduler(opt2, sched(name="poly", power=1.0), 10)
    s2.load_state_dict(s.state_dict())
    assert opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"]


def test_optimizers_and_options():
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    sgd = build_optimizer(model, OptimizerConfig(name="sgd", momentum=0.9, nesterov=True))
    assert isinstance(sgd, torch.optim.SGD) and sgd.param_groups[0]["nesterov"]
    adamw = build_optimizer(model, OptimizerConfig(name="adamw", betas=[0.8, 0.99], weight_decay=0.05,
                                                   no_decay_norm_bias=True))
    assert isinstance(adamw, torch.optim.AdamW)
    assert adamw.param_groups[0]["betas"] == (0.8, 0.99)
    # Only the Linear weight (2-D) decays; biases and BN weights (1-D) do not.
    assert [len(g["params"]) for g in adamw.param_groups] == [1, 3]
    assert adamw.param_groups[1]["weight_decay"] == 0.0
    assert isinstance(build_optimizer(model, OptimizerConfig(name="adam")), torch.optim.Adam)
    with pytest.raises(ValueError, match="nesterov=true needs"):
        build_optimizer(model, OptimizerConfig(name="sgd", momentum=0.0, nesterov=True))

