"""scannet_tr.yaml's CodedVTR network, through the whole training path (preprocessing, dataset,
trainer, evaluator on the original points), memorises one real ScanNet scan: mIoU >= 0.9 on it.
Kept short: 8 cm voxels (22k), 90 Adam steps.
Coarser voxels hold points of several classes: the best point mIoU a perfect voxel labelling
reaches on this scan is 0.917 at 10 cm and 0.878 at 15 cm."""
import json

import pytest

from tests.conftest import REAL_DATA

SCENE = "scene0000_00"


@pytest.mark.skipif(not (REAL_DATA / "scannet" / "scans" / SCENE).is_dir(),
                    reason=f"real ScanNet scan {SCENE} not found under {REAL_DATA}")
def test_codedvtr_network_overfits_one_real_scannet_scan(tmp_path):
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
    cfg = load_config("scannet_tr.yaml", [
        "device=cpu", "engine=torch", f"data.root={tmp_path / 'processed'}", "data.synthetic=false",
        "data.augment.enabled=false", "data.splits={'train': ['train'], 'val': ['train']}",
        "data.batch_size=1", "data.num_workers=0", "data.voxel_size=0.08", "model.args.bn_momentum=0.1",
        "train.iterations=90", "train.val_every=0", "train.ckpt_every=0", "train.progress=false",
        "train.cpu_threads=1", "train.optimizer.name=adam", "train.optimizer.lr=0.01",
        "train.optimizer.weight_decay=0.0", "train.scheduler.name=poly", "train.loss.lovasz_weight=1.0",
        "export.ply=false", "eval.plots=false"])
    assert cfg.model.name == "CodedVTRUNet"
    summary = run(cfg, "train", tmp_path / "run", datasets.build_dataset, models.build_model, collate_fn)
    written = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert written == summary and written["iterations"] == 90
    assert summary["metrics"]["miou"] >= 0.9, summary["metrics"]
