"""build_dataset: synthetic data on first use, split and feature selection, item contract."""
import numpy as np
import pytest

import datasets
from datasets.errors import DataFormatError
from lib import IGNORE_INDEX
from lib.config.schema_data import DataConfig


def test_synthetic_generated_once_then_reused(tmp_path, monkeypatch):
    import datasets.synthetic as synthetic

    calls = []
    real = synthetic.generate
    monkeypatch.setattr(synthetic, "generate", lambda *a, **k: calls.append(a) or real(*a, **k))
    cfg = DataConfig(dataset="scannet", synthetic=True, synthetic_scenes=2, cache_dir=str(tmp_path),
                     root=str(tmp_path / "unused"), splits={"all": ["train", "val"]})
    first = datasets.build_dataset(cfg, "all")
    second = datasets.build_dataset(cfg, "all")
    assert len(calls) == 1 and calls[0][0] == "scannet" and calls[0][2] == 2
    monkeypatch.setattr(synthetic, "GENERATOR_VERSION", synthetic.GENERATOR_VERSION + 1)
    datasets.build_dataset(cfg, "all")
    assert len(calls) == 2  # a newer generator never reuses an older cache
    assert len(first) == len(second) == 2
    item = first[0]
    assert item["coords"].dtype == np.int32 and item["feats"].shape == (len(item["coords"]), 3)
    assert item["labels"].dtype == np.int64 and item["inverse"].shape == item["point_labels"].shape
    assert item["points"].dtype == np.float32 and item["points"].shape == (len(item["inverse"]), 3)


def test_item_contract_and_features(scannet_root):
    cfg = DataConfig(dataset="scannet", root=str(scannet_root), features=["rgb", "xyz", "ones"])
    ds = datasets.build_dataset(cfg, "train")
    assert ds.meta.in_channels == 7
    item = ds[0]
    m, p = len(item["coords"]), len(item["points"])
    assert item["feats"].shape == (m, 7) and item["feats"].dtype == np.float32
    assert item["labels"].shape == (m,) and item["inverse"].shape == (p,) and item["point_labels"].shape == (p,)
    assert item["coords"].min() == 0 and np.all(item["feats"][:, 6] == 1)
    assert np.all(np.abs(item["feats"][:, :3]) <= 0.5)  # colours scaled to [-0.5, 0.5]
    labels = item["labels"]
    assert np.all((labels == IGNORE_INDEX) | ((labels >= 0) & (labels < 20)))
    with pytest.raises(ValueError, match="dataset 'scannet' has no 'remission'"):
        datasets.build_dataset(DataConfig(dataset="scannet", root=str(scannet_root), features=["remission"]), "train")
    with pytest.raises(ValueError, match="unknown feature 'normals'"):
        datasets.build_dataset(DataConfig(dataset="scannet", root=str(scannet_root), features=["normals"]), "train")


def test_split_errors(scannet_root, kitti_root):
    with pytest.raises(ValueError, match="no split 'holdout'"):
        datasets.build_dataset(DataConfig(dataset="scannet", root=str(scannet_root)), "holdout")
    with pytest.raises(DataFormatError, match="no scenes in split 'val'"):  # the real frames are sequence 00
        datasets.build_dataset(DataConfig(dataset="semantickitti", root=str(kitti_root)), "val")
    with pytest.raises(DataFormatError, match="holds dataset 'scannet'"):
        datasets.build_dataset(DataConfig(dataset="s3dis", root=str(scannet_root)), "train")
    kitti = datasets.build_dataset(DataConfig(dataset="semantickitti", root=str(kitti_root), splits={"x": [0]}), "x")
    assert len(kitti) == 2  # sequence numbers from YAML become "00"


def test_augmentation_only_on_augment_splits(scannet_root):
    cfg = DataConfig(dataset="scannet", root=str(scannet_root))
    val = datasets.build_dataset(cfg, "val")
    a, b = val[0], val[0]
    val.set_epoch(3)
    c = val[0]
    assert np.array_equal(a["feats"], b["feats"]) and np.array_equal(a["feats"], c["feats"])
    assert val.quantization == "mean" and datasets.build_dataset(cfg, "train").quantization == "random"
