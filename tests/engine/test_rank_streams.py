"""A scene's augmentation does not depend on the rank that loads it: with the dataset built as
main.py builds it and the engine's training loader, a scene that both ranks of a 2-rank split load
in one epoch (the wrap-around padding of an odd scene count) comes out identical on both."""
import numpy as np
import pytest

import main
from lib.config import load_config
from lib.engine.data import make_loader
from tests.conftest import REAL_DATA


def _same(a, b):
    return all(np.array_equal(a[k], b[k]) for k in ("coords", "feats", "labels", "inverse"))


@pytest.mark.skipif(not (REAL_DATA / "scannet").is_dir(), reason=f"real ScanNet scans not found at {REAL_DATA}")
def test_a_scene_augments_the_same_on_rank_0_and_rank_1(tmp_path):
    from datasets.preprocessing import preprocess

    raw = REAL_DATA / "scannet"
    root = tmp_path / "pre"
    preprocess("scannet", raw, root, workers=1, progress=False)
    cfg = load_config("demo.yaml", ["data.synthetic=false", f"data.root={root}", "seed=3"])
    dataset = main.dataset_builder(cfg)(cfg.data, "train")
    dataset.scene_ids = dataset.scene_ids[:5]  # odd: rank 1's last slot wraps to rank 0's first scene
    epoch = 1
    dataset.set_epoch(epoch)

    seen = {}
    for rank in (0, 1):
        loader = make_loader(dataset, 1, 0, lambda batch: batch[0], rank=rank, world=2, shuffle=True, seed=cfg.seed)
        loader.sampler.set_epoch(epoch)
        for item in loader:
            seen.setdefault(item["scene"], []).append((rank, item))
    both = [scene for scene, views in seen.items() if {r for r, _ in views} == {0, 1}]
    assert both, "the padded 2-rank split should hand one scene to both ranks"
    for scene in both:
        (_, a), (_, b) = seen[scene]
        assert _same(a, b), f"{scene}: rank 0 and rank 1 augmented it differently"
    # augmentation is on: another epoch of the same scene differs
    dataset.set_epoch(epoch + 1)
    loader = make_loader(dataset, 1, 0, lambda batch: batch[0], rank=0, world=1, shuffle=True, seed=cfg.seed)
    loader.sampler.set_epoch(epoch + 1)
    again = {item["scene"]: item for item in loader}
    assert not _same(again[both[0]], seen[both[0]][0][1])
