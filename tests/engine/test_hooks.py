"""Hooks from the recipe: names checked against the registry, run in the order their reads and
writes demand; named losses weighted from the recipe and, with the model's logged values, read
back from the TensorBoard event file; progress callbacks see 0 -> 1."""
import struct

import pytest
import torch

from lib.config import ConfigError
from lib.config.schema_train import DEFAULT_HOOKS
from lib.engine import hooks as H
from lib.engine.hookbase import HookBase, build_hooks, order_hooks
from tests.engine import standin_main
from tests.engine import standins as S
from tests.engine.test_trainer import context, train


def read_events(logdir):
    """Yield every Event in the TFRecord event files in `logdir` (framing: u64 length, u32 crc,
    payload, u32 crc), decoded with the Event protobuf tensorboardX writes."""
    from tensorboardX.proto import event_pb2
    for path in sorted(logdir.glob("events.out.tfevents.*")):
        data = path.read_bytes()
        pos = 0
        while pos < len(data):
            (length,) = struct.unpack("<Q", data[pos:pos + 8])
            yield event_pb2.Event.FromString(data[pos + 12:pos + 12 + length])
            pos += 12 + length + 4


def read_scalars(logdir) -> dict:
    """{tag: {step: value}} of the scalars in the event files in `logdir`."""
    out = {}
    for event in read_events(logdir):
        for value in event.summary.value:
            out.setdefault(value.tag, {})[event.step] = value.simple_value
    return out


def test_named_losses_and_logs_reach_tensorboard_weighted_from_the_recipe(tmp_path):
    trainer, losses = train(tmp_path / "run", ["train.iterations=3", "model.args={'aux': True}",
                                               "train.loss_weights={'l2': 3.0, 'l1': 0.25}"])
    scalars = read_scalars(tmp_path / "run" / "tensorboard")
    for tag in ("loss/ce", "loss/l2", "loss/l1", "model/mean_logit", "train/loss", "train/lr", "val/mIoU"):
        assert tag in scalars, (tag, sorted(scalars))
    for step in (1, 2, 3):
        total = scalars["loss/ce"][step] + 3.0 * scalars["loss/l2"][step] + 0.25 * scalars["loss/l1"][step]
        assert scalars["train/loss"][step] == pytest.approx(total, rel=1e-5)
        assert scalars["train/loss"][step] == pytest.approx(losses[step], rel=1e-6)
    assert all(v != 0 for v in scalars["model/mean_logit"].values())


def read_meshes(logdir) -> dict:
    """{(tag, step): array} of the mesh plugin's tensors in the event files (tags `<tag>_1`:
    vertices, `<tag>_3`: colours, each [1, P, 3]), decoded from the TensorProto float values."""
    import numpy as np
    out = {}
    for event in read_events(logdir):
        for value in event.summary.value:
            if value.metadata.plugin_data.plugin_name == "mesh":
                shape = [d.size for d in value.tensor.tensor_shape.dim]
                out[value.tag, event.step] = np.asarray(value.tensor.float_val).reshape(shape)
    return out


def test_pointcloud_hook_writes_prediction_and_ground_truth_meshes(tmp_path):
    import numpy as np

    hooks = "train.hooks=[logging, validation, pointcloud, tensorboard]"
    trainer, _ = train(tmp_path / "on", ["train.iterations=4", "train.val_every=2", hooks])
    meshes = read_meshes(tmp_path / "on" / "tensorboard")
    views = ("pointcloud/prediction", "pointcloud/ground_truth")
    assert sorted(meshes) == sorted((f"{v}_{kind}", step) for v in views for kind in (1, 3) for step in (2, 4))
    # independent truth: validation scene 0 of the stand-in set, its labels through the palette
    from lib.engine.data import SeededItems
    scene = SeededItems(S.build_dataset(None, "val"), standin_main.config([]).seed).item(0)  # as validation loads it
    palette = S.Meta.palette
    for step in (2, 4):
        for view in views:
            np.testing.assert_allclose(meshes[f"{view}_1", step][0], scene["points"])
        truth = np.where((scene["point_labels"] >= 0)[:, None], palette[np.clip(scene["point_labels"], 0, 2)], 128)
        np.testing.assert_array_equal(meshes["pointcloud/ground_truth_3", step][0], truth)
        predicted = meshes["pointcloud/prediction_3", step][0]
        assert all(tuple(c) in {tuple(p) for p in palette} for c in predicted)  # a class colour per point
    # the last prediction is the final model's on that scene
    model = trainer.model.eval()
    with torch.no_grad():
        pred = model(torch.as_tensor(scene["feats"])).argmax(1).numpy()[scene["inverse"]]
    np.testing.assert_array_equal(meshes["pointcloud/prediction_3", 4][0], palette[pred])

    train(tmp_path / "off", ["train.iterations=4", "train.val_every=2"])  # the default hooks
    assert read_meshes(tmp_path / "off" / "tensorboard") == {}
    assert read_scalars(tmp_path / "off" / "tensorboard")  # the same reader finds the scalars


class ProgressProbe(torch.nn.Module):
    """A submodule with the contract's progress callback."""

    def __init__(self):
        super().__init__()
        self.calls = []
        self.storages = set()

    def on_train_progress(self, iteration, progress):
        from lib.engine.storage import get_event_storage
        self.calls.append((iteration, progress))
        self.storages.add(id(get_event_storage()))


def test_a_model_callback_sees_progress_from_0_to_1(tmp_path):
    probe = ProgressProbe()

    def build_model(model_cfg, in_channels, num_classes):
        model = S.ToyNet(in_channels, num_classes)
        model.probe = probe
        return model

    ctx = context(tmp_path / "run", ["train.iterations=5"])
    ctx.build_model = build_model
    from lib.engine.modes import train as train_mode
    trainer = train_mode.build_trainer(ctx)
    trainer.train()
    assert probe.calls == [(0, 0.0), (1, 0.25), (2, 0.5), (3, 0.75), (4, 1.0)]
    assert probe.storages == {id(trainer.storage)}  # get_event_storage() is the trainer's while it trains


def test_unknown_hook_names_are_config_errors_with_a_suggestion(tmp_path):
    with pytest.raises(ConfigError, match="train.hooks: unknown hook 'chekpoint'; did you mean 'checkpoint'"):
        train(tmp_path / "a", ["train.hooks=['logging', 'chekpoint']"])
    with pytest.raises(ConfigError, match="listed twice"):
        train(tmp_path / "b", ["train.hooks=['logging', 'logging']"])


def test_hooks_run_after_the_hooks_whose_values_they_read(tmp_path):
    env = H.HookEnv(standin_main.config([]), ["a", "b", "c"], torch.device("cpu"), run_dir=tmp_path)
    names = [h.name for h in build_hooks(["checkpoint", "tensorboard", "validation", "logging"], env)]
    assert names == ["validation", "checkpoint", "logging", "tensorboard"]
    assert [h.name for h in build_hooks(DEFAULT_HOOKS, env)] == DEFAULT_HOOKS  # today's order already fits

    class Reads(HookBase):
        name, reads, writes = "x", ("a",), ("b",)

    class Writes(HookBase):
        name, reads, writes = "y", ("b",), ("a",)

    with pytest.raises(ConfigError, match="circular"):
        order_hooks([Reads(), Writes()])


def test_a_recipe_without_tensorboard_writes_no_events(tmp_path):
    trainer, losses = train(tmp_path / "run", ["train.iterations=2", "train.hooks=['logging', 'checkpoint']"])
    assert sorted(losses) == [1, 2] and (tmp_path / "run" / "last.pth").is_file()
    assert not (tmp_path / "run" / "tensorboard").exists()


def test_removed_aux_weight_points_at_loss_weights():
    with pytest.raises(ConfigError, match=r"'train.loss.aux_weight' \(from command line\) was removed: .*"
                                          r"train.loss_weights.<name>"):
        standin_main.config(["train.loss.aux_weight=2.0"])


def test_console_line_sums_up_per_block_values():
    """Issue 23: CodedVTR's 24 per-block fields made 900-character console lines; the line holds one
    summary per name, TensorBoard every block."""
    from lib.engine.hooks import console_text

    scalars = {"train/loss": 1.5, "train/lr": 0.01, "loss/ce": 1.5, "train/peak_memory_mb": float("nan")}
    scalars.update({f"model/choice_entropy/encoders.{i}.0": v for i, v in enumerate([0.5, 1.0, 1.5])})
    scalars.update({f"model/temperature/encoders.{i}.0": 1.0 for i in range(3)})
    assert console_text(scalars) == ("loss=1.5 lr=0.01 loss/ce=1.5 model/choice_entropy=1 [0.5, 1.5] over 3 blocks "
                                     "model/temperature=1 over 3 blocks")
    assert console_text({"model/usage": 0.25}) == "model/usage=0.25"
