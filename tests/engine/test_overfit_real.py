"""The whole training path (preprocessing, dataset, Res16UNet on the torch engine, trainer,
evaluator on the original points) memorises one real ScanNet scan: mIoU >= 0.9 on it."""
from tests.engine.overfit_helpers import needs_real_scan, preprocess_real_scan, train_and_check_summary


@needs_real_scan
def test_overfit_one_real_scannet_scan(tmp_path):
    from lib.config import load_config

    processed = preprocess_real_scan(tmp_path)
    cfg = load_config("demo.yaml", [
        f"data.root={processed}", "data.synthetic=false", "data.augment.enabled=false",
        "data.splits={'train': ['train'], 'val': ['train']}", "data.batch_size=1", "data.num_workers=0",
        "data.voxel_size=0.07", "train.iterations=60", "train.val_every=0", "train.ckpt_every=0",
        "train.progress=false", "export.ply=false", "eval.plots=false"])
    summary = train_and_check_summary(cfg, tmp_path, 60)
    assert summary["metrics"]["miou"] >= 0.9, summary["metrics"]
