"""The codebook temperature over a real training run: main.py's path (lib.engine.launch.run) trains a
narrow CodedVTR U-Net on synthetic rooms, and the temperature each step logged to TensorBoard is
T_start^(1 - p) * T_end^p with p = iteration / (max_iter - 1), computed here by hand."""
import pytest

from tests.engine.test_hooks import read_scalars

T_START, T_END, ITERS = 2.0, 0.5, 4


def test_temperature_follows_its_schedule_over_a_training_run(tmp_path):
    import datasets
    import models
    from datasets.collate import collate_fn
    from lib.config import load_config
    from lib.engine.launch import run

    cfg = load_config("demo_tr.yaml", [
        f"data.cache_dir={tmp_path / 'cache'}", "data.synthetic_scenes=3", "data.voxel_size=0.2",
        "data.num_workers=0", "data.batch_size=1", f"train.iterations={ITERS}", f"train.val_every={ITERS}",
        f"train.ckpt_every={ITERS}", "train.log_every=1", "train.progress=false", "eval.plots=false",
        "model.args.planes=[8, 8, 8, 8, 8, 8, 8, 8]", "model.args.init_dim=8",
        f"model.args.block_args.codedvtr.t_start={T_START}", f"model.args.block_args.codedvtr.t_end={T_END}"])
    build = lambda data_cfg, split: datasets.build_dataset(data_cfg, split, seed=cfg.seed)  # noqa: E731
    run(cfg, "train", tmp_path / "run", build, models.build_model, collate_fn)
    scalars = read_scalars(tmp_path / "run" / "tensorboard")
    tags = [t for t in scalars if t.startswith("model/temperature/")]
    assert len(tags) == 6  # one per CodedVTR block: stages 2-7, one block each in demo_tr
    for tag in tags:
        logged = scalars[tag]
        assert sorted(logged) == list(range(1, ITERS + 1))  # written after each step
        for step, value in logged.items():
            p = (step - 1) / (ITERS - 1)  # the step logged as `step` ran with the progress of step - 1
            assert value == pytest.approx(T_START ** (1 - p) * T_END ** p, rel=1e-6), (tag, step)
