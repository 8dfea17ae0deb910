"""Preprocessing runs: parallel workers, re-runs skip finished scenes, killed runs leave no half scene."""
import json
import os

import numpy as np

from data_helpers import make_scannet_tree, random_scene
from datasets import store
from datasets.preprocessing import preprocess


def _tree(tmp_path, n=4):
    scenes = {f"scene000{i}_00": random_scene(150, seed=i) for i in range(n)}
    return make_scannet_tree(tmp_path / "raw", scenes, {"train": list(scenes)[:3], "val": list(scenes)[3:]})


def test_workers_give_the_same_result(tmp_path):
    raw = _tree(tmp_path)
    one = preprocess("scannet", raw, tmp_path / "one", workers=1, progress=False)
    two = preprocess("scannet", raw, tmp_path / "two", workers=2, progress=False)
    assert one["scenes"] == two["scenes"] and len(one["scenes"]) == 4
    for scene in one["scenes"]:
        for name in ("coord", "color", "label"):
            np.testing.assert_array_equal(np.load(store.scene_dir(tmp_path / "one", scene) / f"{name}.npy"),
                                          np.load(store.scene_dir(tmp_path / "two", scene) / f"{name}.npy"))


def test_rerun_skips_finished_scenes_and_completes_killed_runs(tmp_path, monkeypatch):
    raw = _tree(tmp_path)
    out = tmp_path / "out"
    first = preprocess("scannet", raw, out, workers=1, progress=False)
    # simulate a run killed mid-scene: a temporary folder, and a scene folder without its scene.json
    (out / "scenes" / ".tmp_scene0001_00_999").mkdir()
    (out / "scenes" / ".tmp_scene0001_00_999" / "coord.npy").write_bytes(b"half")
    os.remove(out / "scenes" / "scene0002_00" / "scene.json")
    stamp = os.stat(out / "scenes" / "scene0000_00" / "coord.npy").st_mtime_ns

    from datasets import scannet

    calls = []
    real = scannet.read_raw_scene
    monkeypatch.setattr(scannet, "read_raw_scene", lambda *a: calls.append(a[0]) or real(*a))
    second = preprocess("scannet", raw, out, workers=1, progress=False)
    assert calls == ["scene0002_00"]  # only the unfinished scene is redone
    assert second["scenes"] == first["scenes"]
    assert not any(p.name.startswith(".tmp_") for p in (out / "scenes").iterdir())
    assert os.stat(out / "scenes" / "scene0000_00" / "coord.npy").st_mtime_ns == stamp
    assert json.loads((out / "manifest.json").read_text()) == second


def test_manifest_layout(tmp_path):
    manifest = preprocess("scannet", _tree(tmp_path), tmp_path / "out", workers=1, progress=False)
    assert {"dataset", "num_classes", "class_names", "scenes"} <= set(manifest)
    for record in manifest["scenes"].values():
        assert {"split", "points", "class_counts", "ignored"} <= set(record)
        assert len(record["class_counts"]) == 20
        assert sum(record["class_counts"]) + record["ignored"] == record["points"]
