"""scannet_tr.yaml's CodedVTR network, through the whole training path (preprocessing, dataset,
trainer, evaluator on the original points), memorises one real ScanNet scan: mIoU >= 0.9 on it.
Kept short: 8 cm voxels (22k), 90 Adam steps.
Coarser voxels hold points of several classes: the best point mIoU a perfect voxel labelling
reaches on this scan is 0.917 at 10 cm and 0.878 at 15 cm."""
from tests.engine.overfit_helpers import needs_real_scan, preprocess_real_scan, train_and_check_summary


@needs_real_scan
def test_codedvtr_network_overfits_one_real_scannet_scan(tmp_path):
    from lib.config import load_config

    processed = preprocess_real_scan(tmp_path)
    cfg = load_config("scannet_tr.yaml", [
        "device=cpu", "engine=torch", f"data.root={processed}", "data.synthetic=false",
        "data.augment.enabled=false", "data.splits={'train': ['train'], 'val': ['train']}",
        "data.batch_size=1", "data.num_workers=0", "data.voxel_size=0.08", "model.args.bn_momentum=0.1",
        "train.iterations=90", "train.val_every=0", "train.ckpt_every=0", "train.progress=false",
        "train.cpu_threads=1", "train.optimizer.name=adam", "train.optimizer.lr=0.01",
        "train.optimizer.weight_decay=0.0", "train.scheduler.name=poly", "train.loss.lovasz_weight=1.0",
        "export.ply=false", "eval.plots=false"])
    assert cfg.model.name == "CodedVTRUNet"
    summary = train_and_check_summary(cfg, tmp_path, 90)
    assert summary["metrics"]["miou"] >= 0.9, summary["metrics"]
