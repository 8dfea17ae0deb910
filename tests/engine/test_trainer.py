"""The training loop on stand-ins: an interrupted run resumed from `last` repeats the
uninterrupted run's losses exactly; non-finite steps are skipped and bounded; auxiliary losses,
gradient accumulation and the writer's closing on every exit path."""
import json
import math

import pytest
import torch

from tests.engine import standin_main
from tests.engine import standins as S
from lib.engine import hooks as H
from lib.engine.inputs import InputMaker
from lib.engine.launch import RunContext
from lib.engine.modes import train as train_mode
from lib.engine.process import seed_process
from lib.engine.trainer import NonFiniteLossError

COMMON = ["train.iterations=12", "train.ckpt_every=4", "model.args={'dropout': 0.3}",
          "train.ema.enabled=True", "train.scheduler.warmup_iters=3", "train.optimizer.nesterov=True"]


def context(run_dir, overrides=(), resume=False, rank=0, world=1):
    """A RunContext after the process setup `lib.engine.launch.run` does (per-rank RNG streams)."""
    cfg = standin_main.config(list(overrides))
    run_dir.mkdir(parents=True, exist_ok=True)
    seed_process(cfg.seed, rank)
    return RunContext(cfg, "train", run_dir, torch.device("cpu"), rank, world, S.build_dataset, S.build_model,
                      S.collate, InputMaker("torch"), "", resume)


def train(run_dir, overrides=(), resume=False):
    """(trainer, {iteration: loss}) of a stand-in run (log_every=1: every step's loss is logged)."""
    trainer = train_mode.build_trainer(context(run_dir, overrides, resume))
    trainer.train()
    return trainer, dict(trainer.storage.history("train/loss"))


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_repeats_the_uninterrupted_losses(tmp_path, workers):
    common = COMMON + [f"data.num_workers={workers}"]
    full, full_losses = train(tmp_path / "full", common)
    # Killed after iteration 6; the last checkpoint is from iteration 4, so 5 and 6 are redone.
    _, first = train(tmp_path / "cut", common + ["train.stop_at=6"])
    assert sorted(first) == list(range(1, 7))
    resumed, second = train(tmp_path / "cut", common, resume=True)
    assert sorted(second) == list(range(5, 13))
    assert all(math.isfinite(v) for v in full_losses.values())
    assert {**{i: first[i] for i in range(1, 5)}, **second} == full_losses  # bit for bit
    for (name, a), b in zip(full.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name
    assert torch.equal(full.ema.module.net[0].weight, resumed.ema.module.net[0].weight)


@pytest.mark.parametrize("stop_at", [6, 10])
def test_resume_with_deferred_scenes_repeats_the_uninterrupted_losses(tmp_path, stop_at):
    # 40-voxel scenes, 2 a batch, a 70-voxel cap: every step defers a scene, and each epoch ends
    # with extra steps of the deferred ones (6 steps an epoch). last.pth is from iteration 4 (an
    # epoch's tail still to come) or 8 (two scenes deferred mid-epoch), written by two workers.
    common = COMMON + ["data.limit_numpoints=70", "data.num_workers=2"]
    full, full_losses = train(tmp_path / "full", common)
    _, first = train(tmp_path / "cut", common + [f"train.stop_at={stop_at}"])
    stream = torch.load(tmp_path / "cut" / "last.pth", weights_only=True)["trainer"]["stream"][0]
    assert (stream["tail"] if stop_at == 6 else stream["pending"]), stream
    resumed, second = train(tmp_path / "cut", common, resume=True)
    done = stop_at // 4 * 4
    assert {**{i: first[i] for i in range(1, done + 1)}, **second} == full_losses  # bit for bit
    for (name, a), b in zip(full.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name


class RecordingWriter:
    instances = []

    def __init__(self, logdir):
        self.closed = False
        RecordingWriter.instances.append(self)

    def add_scalar(self, *args):
        pass

    def close(self):
        self.closed = True


def test_interrupt_in_a_hook_closes_the_writer_and_resumes(tmp_path, monkeypatch):
    import tensorboardX

    def interrupt(self, trainer):
        if self.stop_at and trainer.iteration >= self.stop_at:
            raise KeyboardInterrupt

    _, full_losses = train(tmp_path / "full", COMMON)
    monkeypatch.setattr(tensorboardX, "SummaryWriter", RecordingWriter)
    monkeypatch.setattr(H.StopAtHook, "after_step", interrupt)
    with pytest.raises(KeyboardInterrupt):
        train(tmp_path / "cut", COMMON + ["train.stop_at=7"])
    assert RecordingWriter.instances[-1].closed
    monkeypatch.undo()
    _, second = train(tmp_path / "cut", COMMON, resume=True)
    assert second == {i: full_losses[i] for i in range(5, 13)}


def test_non_finite_steps_are_skipped_then_bounded(tmp_path):
    trainer, losses = train(tmp_path / "a", ["train.iterations=6", "model.args={'nan_at': [3, 4]}",
                                             "train.max_bad_steps=3"])
    assert [i for i, v in losses.items() if math.isnan(v)] == [3, 4]
    assert trainer.skipped_total == 2 and trainer.completed
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())
    with pytest.raises(NonFiniteLossError, match=r"3 consecutive steps \(up to iteration 5\)"):
        train(tmp_path / "b", ["train.iterations=6", "model.args={'nan_at': [3, 4, 5]}",
                               "train.max_bad_steps=3"])


def test_named_losses_are_weighted_by_the_recipe(tmp_path):
    trainer, _ = train(tmp_path / "a", ["train.iterations=2", "model.args={'aux': True}",
                                        "train.loss_weights={'l2': 2.0, 'l1': 0.5}"])
    info = trainer.storage.get("step_info")
    losses = info["losses"]
    assert losses["l2"] > 0 and losses["l1"] > 0
    assert info["loss"] == pytest.approx(losses["ce"] + 2.0 * losses["l2"] + 0.5 * losses["l1"], rel=1e-6)
    assert info["logs"]["mean_logit"] != 0


def test_accumulating_two_batches_of_one_equals_one_batch_of_two(tmp_path):
    # Every stand-in scene has 39 labelled voxels, so the mean over two scenes is the mean of means.
    a, _ = train(tmp_path / "a", ["train.iterations=4", "data.batch_size=2"])
    b, _ = train(tmp_path / "b", ["train.iterations=4", "data.batch_size=1", "train.accum_steps=2"])
    for (name, x), y in zip(a.model.state_dict().items(), b.model.state_dict().values()):
        assert torch.allclose(x, y, atol=1e-6), name


def test_clipping_bounds_the_update(tmp_path):
    trainer, _ = train(tmp_path / "a", ["train.iterations=1", "train.clip_grad_norm=0.001",
                                        "train.optimizer.momentum=0.0", "train.optimizer.weight_decay=0.0",
                                        "train.scheduler.name='constant'"])
    torch.manual_seed(0)  # the model is built under cfg.seed: the same initial weights
    before = S.build_model(standin_main.config([]).model, 4, 3)
    moved = torch.cat([(p.detach() - q.detach()).flatten() for p, q in zip(trainer.model.parameters(), before.parameters())])
    assert trainer.storage.get("step_info")["grad_norm"] > 1e-3
    assert float(moved.norm()) == pytest.approx(0.1 * 1e-3, rel=1e-4)  # lr * max_norm


def test_skipped_step_still_draws_all_its_micro_batches():
    # Resume places the stream at iteration * accum_steps batches, skipped steps included.
    from lib.engine.losses import SegmentationLoss
    from lib.engine.optim import IterationScheduler
    from lib.engine.trainer import Trainer

    batch = S.collate([S.ToyScenes(n=1)[0]])

    class CountingStream:
        drawn = 0

        def __next__(self):
            self.drawn += 1
            return batch

    cfg = standin_main.config(["train.accum_steps=3"])
    model = S.ToyNet(4, 3, nan_at=[4])  # the first micro-batch of step 2
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    stream = CountingStream()
    trainer = Trainer(model, SegmentationLoss(), opt, IterationScheduler(opt, cfg.train.scheduler, 3), stream,
                      S.plain_input, 3, cfg.train, torch.device("cpu"))
    trainer.train()
    assert trainer.skipped_total == 1 and stream.drawn == 9


def test_non_finite_gradients_of_a_finite_loss_skip_the_step(tmp_path):
    # Regression (issue 12): only the loss was checked, so infinite gradients reached the weights.
    trainer, losses = train(tmp_path / "a", ["train.iterations=5", "model.args={'nan_grad_at': [2]}"])
    assert all(math.isfinite(v) for v in losses.values())  # the loss itself was fine
    assert trainer.skipped_total == 1 and trainer.completed
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())
    saved = torch.load(tmp_path / "a" / "last.pth", weights_only=True)["model"]
    assert all(torch.isfinite(v).all() for v in saved.values())
    with pytest.raises(NonFiniteLossError, match=r"gradient was NaN/inf in 2 consecutive steps"):
        train(tmp_path / "b", ["train.iterations=5", "model.args={'nan_grad_at': [2, 3]}", "train.max_bad_steps=2"])


def test_bf16_autocast_runs_on_the_cpu_in_training_and_validation(tmp_path):
    # Regression (issue 12): autocast was enabled on CUDA only, so train.amp=bf16 did nothing on the CPU.
    seen = []

    def build_model(model_cfg, in_channels, num_classes):
        model = S.ToyNet(in_channels, num_classes)
        model.register_forward_hook(lambda m, args, out: seen.append((m.training, out.dtype)))
        return model

    ctx = context(tmp_path / "run", ["train.iterations=2", "train.val_every=2", "train.amp=bf16"])
    ctx.build_model = build_model
    trainer = train_mode.build_trainer(ctx)
    trainer.train()
    assert {dtype for training, dtype in seen if training} == {torch.bfloat16}
    assert {dtype for training, dtype in seen if not training} == {torch.bfloat16}  # validation
    assert trainer.scaler is None  # GradScaler only for fp16 on CUDA
    assert all(torch.isfinite(p).all() and p.dtype == torch.float32 for p in trainer.model.parameters())


def test_ranks_share_initial_weights_but_not_dropout_streams(tmp_path):
    # Regression (issue 12): train re-seeded torch with cfg.seed on every rank after the process
    # seeded it per rank, so every rank drew the same dropout masks.
    weights, streams = [], []
    for rank in (0, 1):
        def build_model(model_cfg, in_channels, num_classes):
            model = S.ToyNet(in_channels, num_classes, dropout=0.5)
            weights.append({k: v.clone() for k, v in model.state_dict().items()})
            model.register_forward_pre_hook(
                lambda m, args: streams.append(torch.get_rng_state()) if m.training and len(streams) <= rank else None)
            return model

        ctx = context(tmp_path / f"rank{rank}", ["train.iterations=1", "train.val_every=0"], rank=rank, world=2)
        ctx.build_model = build_model
        train_mode.build_trainer(ctx).train()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    assert len(streams) == 2 and not torch.equal(streams[0], streams[1])


def test_resume_from_a_format_1_checkpoint(tmp_path):
    from tests.engine.test_checkpoint import v1_layout
    common = COMMON + ["train.val_every=2"]
    _, full_losses = train(tmp_path / "full", common)
    _, first = train(tmp_path / "cut", common + ["train.stop_at=6"])
    v2 = torch.load(tmp_path / "cut" / "last.pth", weights_only=True)
    assert v2["trainer"]["iteration"] == 4 and v2["hooks"]["validation"]["best"] is not None
    torch.save(v1_layout(v2), tmp_path / "cut" / "last.pth")  # as the format-1 trainer wrote it
    assert "trainer" not in torch.load(tmp_path / "cut" / "last.pth", weights_only=True)
    resumed = train_mode.build_trainer(context(tmp_path / "cut", common, resume=True))
    validation = resumed.hook("validation")
    assert (validation.best, validation.best_iteration) == (v2["hooks"]["validation"]["best"],
                                                            v2["hooks"]["validation"]["best_iteration"])
    resumed.train()
    second = dict(resumed.storage.history("train/loss"))
    assert {**{i: first[i] for i in range(1, 5)}, **second} == full_losses


def test_a_grad_scaler_overflow_is_the_scalers_skipped_step_not_a_bad_step():
    # The fp16 path (GradScaler) exercised on the CPU with torch's CPU scaler.
    from lib.engine.losses import SegmentationLoss
    from lib.engine.optim import IterationScheduler
    from lib.engine.trainer import Trainer

    batch = S.collate([S.ToyScenes(n=1)[0]])
    stream = iter(lambda: batch, None)
    cfg = standin_main.config(["train.max_bad_steps=2"])
    torch.manual_seed(0)
    model = S.ToyNet(4, 3, nan_grad_at=[1, 2, 3])  # three overflows in a row: more than max_bad_steps
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 10)
    trainer = Trainer(model, SegmentationLoss(), opt, IterationScheduler(opt, cfg.train.scheduler, 4), stream,
                      S.plain_input, 4, cfg.train, torch.device("cpu"), scaler)
    before = [p.detach().clone() for p in model.parameters()]
    trainer.train()
    assert trainer.completed and trainer.skipped_total == 3 and trainer.bad_steps == 0
    assert scaler.get_scale() == 2.0 ** 10 * 0.5 ** 3  # backed off once per overflow
    moved = [not torch.equal(a, b) for a, b in zip(before, model.parameters())]
    assert any(moved) and all(torch.isfinite(p).all() for p in model.parameters())  # step 4 updated


def test_the_shared_initial_seed_leaves_cuda_generators_alone(monkeypatch):
    # torch.manual_seed also reseeds every CUDA generator (lazily, without a GPU): the shared seed
    # for the initial weights must not, or every rank's GPU dropout would draw the same masks.
    from lib.engine.process import shared_seed
    calls = []
    monkeypatch.setattr(torch.cuda, "manual_seed_all", lambda seed: calls.append(seed))
    monkeypatch.setattr(torch.cuda, "manual_seed", lambda seed: calls.append(seed))
    torch.manual_seed(7)
    assert calls == [7]  # the probe sees what torch.manual_seed does
    with shared_seed(0):
        first = torch.rand(3)
    with shared_seed(0):
        assert torch.equal(torch.rand(3), first)
    assert calls == [7]


def test_test_mode_runs_at_the_recipes_precision_as_validation_does(tmp_path):
    # Regression (issue 21): validation ran under train.amp's autocast, --mode test in fp32, so the
    # logged validation was not what test mode scores on the same weights.
    from lib.engine.modes import evaluate as evaluate_mode

    ctx = context(tmp_path / "run", ["train.iterations=1", "train.val_every=0", "train.amp=bf16"])
    train_mode.build_trainer(ctx).train()
    seen = []

    def build_model(model_cfg, in_channels, num_classes):
        model = S.ToyNet(in_channels, num_classes)
        model.register_forward_hook(lambda m, args, out: seen.append(out.dtype))
        return model

    test = context(tmp_path / "test", ["train.amp=bf16"])
    test.mode, test.weights, test.build_model = "test", str(tmp_path / "run" / "last.pth"), build_model
    evaluate_mode.run(test)
    assert seen and set(seen) == {torch.bfloat16}
    assert json.loads((tmp_path / "test" / "metrics.json").read_text())["precision"] == "bf16"
