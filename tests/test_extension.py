"""Extending voxseg without touching lib/, models/ or the datasets package: a toy dataset and a toy
model registered from this file train, validate, test and export through lib.engine.launch.run,
the path main.py takes."""
import numpy as np
import pytest
import torch
from torch import nn

from datasets.errors import DataFormatError
from datasets.spec import DatasetSpec
from lib import IGNORE_INDEX


class ToyStripes(DatasetSpec):
    """Raw layout: RAW/<split>/<scene>.npy, float32 [P, 4] = x, y, z, label; the label is the x stripe
    (class = floor(x) mod 3) and label -1 means unlabelled."""

    name = "toy_stripes"
    class_names = ("even", "odd", "third")
    palette = ((255, 0, 0), (0, 255, 0), (0, 0, 255))
    raw_ids = (10, 11, 12)
    convention = "zero_absent"
    benchmark = "toy_ids"
    default_splits = {"train": ["train"], "val": ["val"]}
    default_features = ("xyz", "ones")
    written = []

    def list_raw_scenes(self, raw_root):
        return [(p.stem, p.parent.name, p) for p in sorted(raw_root.glob("*/*.npy"))]

    def read_raw_scene(self, scene_id, split, location, strict=True):
        table = np.load(location)
        label = table[:, 3].astype(np.int16)
        if (label >= len(self.class_names)).any():
            raise DataFormatError(location, "label outside the classes")
        label[label < 0] = IGNORE_INDEX
        valid = label[label != IGNORE_INDEX]
        record = {"split": split, "points": len(table), "class_counts": np.bincount(valid, minlength=3).tolist(),
                  "ignored": int((label == IGNORE_INDEX).sum())}
        return {"coord": table[:, :3].astype(np.float32), "label": label}, record

    def write_benchmark(self, out_dir, scene, points, pred, meta, labels=None):
        path = out_dir / f"{scene}.ids"
        out_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(" ".join(str(meta.raw_ids[p]) for p in pred))
        self.written.append(scene)
        return path

    def generate_synthetic(self, out_dir, num_scenes, seed=0, **size_kwargs):
        rng = np.random.default_rng(seed)
        for index in range(num_scenes):
            xyz = rng.random((300, 3)) * [6.0, 2.0, 1.0]
            label = np.floor(xyz[:, 0]).astype(np.int64) % 3
            label[:3] = -1
            split = "val" if index % 3 == 2 else "train"
            (out_dir / split).mkdir(parents=True, exist_ok=True)
            np.save(out_dir / split / f"s{index}.npy", np.concatenate([xyz, label[:, None]], 1).astype(np.float32))
        return out_dir


class ToyVoxelNet(nn.Module):
    """One submanifold conv of lib.sparse, then a per-voxel linear head."""

    def __init__(self, in_channels: int, num_classes: int, width: int = 16):
        super().__init__()
        from lib.sparse import nn as snn

        self.conv = snn.SubMConv3d(in_channels, width, 3)
        self.head = nn.Sequential(nn.ReLU(), nn.Linear(width, num_classes))

    def forward(self, x):
        return self.head(self.conv(x).feats)


@pytest.fixture
def registered():
    import models
    from datasets import registry
    from models.build import MODELS

    ToyStripes.written = []
    registry.register_dataset(ToyStripes)
    models.register_model(ToyVoxelNet)
    yield
    registry.DATASETS.pop("toy_stripes")
    MODELS.pop("ToyVoxelNet")


def test_toy_dataset_and_model_train_test_and_export_through_the_entry(tmp_path, registered):
    import datasets
    import models
    from datasets.collate import collate_fn
    from lib.config import load_config
    from lib.engine.launch import run

    torch.manual_seed(0)
    cfg = load_config("demo.yaml", [
        "data.dataset=toy_stripes", f"data.cache_dir={tmp_path / 'cache'}", "data.synthetic_scenes=6",
        "data.voxel_size=0.25", "data.num_workers=0", "data.augment.enabled=false", "model.name=ToyVoxelNet",
        "model.args={'width': 8}", "train.iterations=6", "train.val_every=3", "train.ckpt_every=3",
        "train.progress=false", "eval.plots=false", "eval.convention=auto", "export.benchmark=true",
        "train.test_split=val"])
    summary = run(cfg, "train", tmp_path / "run", datasets.build_dataset, models.build_model, collate_fn)
    assert summary["iterations"] == 6 and summary["convention"] == "zero_absent"  # the dataset's own
    assert set(summary["metrics"]["per_class_iou"]) == {"even", "odd", "third"}
    state = torch.load(tmp_path / "run" / "last.pth", weights_only=True)["model"]
    assert state["head.1.weight"].shape == (3, 8)  # num_classes from the toy meta, width from the recipe
    run(cfg, "test", tmp_path / "test", datasets.build_dataset, models.build_model, collate_fn,
        weights=tmp_path / "run" / "last.pth")
    assert sorted(ToyStripes.written) == ["s2", "s5"]  # the val scenes, by the dataset's own writer
    ids = (tmp_path / "test" / "predictions" / "toy_ids" / "s2.ids").read_text().split()
    assert len(ids) == 300 and set(ids) <= {"10", "11", "12"}
