"""Shared steps of the real-scan overfit tests: one real ScanNet scan preprocessed as the whole
train split, and a training run whose written summary is checked against the returned one."""
import json

import pytest

from tests.conftest import REAL_DATA

SCENE = "scene0000_00"

needs_real_scan = pytest.mark.skipif(not (REAL_DATA / "scannet" / "scans" / SCENE).is_dir(),
                                     reason=f"real ScanNet scan {SCENE} not found under {REAL_DATA}")


def preprocess_real_scan(tmp_path):
    """Preprocess SCENE alone (train split; val empty) under tmp_path; returns the processed root."""
    from datasets.preprocessing import preprocess

    raw = tmp_path / "raw"
    (raw / "scans").mkdir(parents=True)
    (raw / "scans" / SCENE).symlink_to(REAL_DATA / "scannet" / "scans" / SCENE)
    (raw / "scannetv2_train.txt").write_text(SCENE + "\n")
    (raw / "scannetv2_val.txt").write_text("")
    preprocess("scannet", raw, tmp_path / "processed", progress=False)
    return tmp_path / "processed"


def train_and_check_summary(cfg, tmp_path, iterations: int) -> dict:
    """Train `cfg` into tmp_path/run; summary.json must equal the returned summary and report `iterations`."""
    import datasets
    import models
    from datasets.collate import collate_fn
    from lib.engine.launch import run

    summary = run(cfg, "train", tmp_path / "run", datasets.build_dataset, models.build_model, collate_fn)
    written = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert written == summary and written["iterations"] == iterations
    return summary
