"""The whole training path (preprocessing, dataset, Res16UNet on the torch engine, trainer,
evaluator on the original points) memorises one real ScanNet scan: mIoU >= 0.9 on it."""
import json

import pytest

from tests.conftest import REAL_DATA

SCENE = "scene0000_00"


@pytest.mark.skipif(not (REAL_DATA / "scannet" / "scans" / SCENE).is_dir(),
                    reason=f"real ScanNet scan {SCENE} not found under {REAL_DATA}")
def test_overfit_one_real_scannet_scan(tmp_path):
    import datasets
    import models
    from datasets.collate import collate_fn
    from datasets.preprocessing import preprocess
    from lib.config import load_config
    from lib.engine.launch import run

    raw = tmp_path / "raw"
    (raw / "scans").mkdir(parents=True)
    (raw / "scans" / SCENE).symlink_to(REAL_DATA / "scannet" / "scans" / SCENE)
    (raw / "scannetv2_train.txt").write_text(SCENE + "\n")
    (raw / "scannetv2_val.txt").write_text("")
    preprocess("scannet", raw, tmp_path / "processed", progress=False)
    cfg = load_config("demo.yaml", [
        f"data.root={tmp_path / 'processed'}", "data.synthetic=false", "data.augment.enabled=false",
        "data.splits={'train': ['train'], 'val': ['train']}", "data.batch_size=1", "data.num_workers=0",
        "data.voxel_size=0.07", "train.iterations=60", "train.val_every=0", "train.ckpt_every=0",
        "train.progress=false", "export.ply=false", "eval.plots=false"])
    summary = run(cfg, "train", tmp_path / "run", datasets.build_dataset, models.build_model, collate_fn)
    written = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert written == summary and written["iterations"] == 60
    assert summary["metrics"]["miou"] >= 0.9, summary["metrics"]
