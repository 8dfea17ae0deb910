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


def test_unlabelled_test_scenes(tmp_path):
    import datasets
    from data_helpers import write_ply
    from lib.config.schema_data import DataConfig

    raw = _tree(tmp_path, n=1)
    xyz, rgb, _ = random_scene(80, seed=9)
    write_ply(raw / "scans_test" / "scene0800_00" / "scene0800_00_vh_clean_2.ply",
              {"x": xyz[:, 0], "y": xyz[:, 1], "z": xyz[:, 2], "red": rgb[:, 0], "green": rgb[:, 1], "blue": rgb[:, 2]})
    (raw / "scannetv2_test.txt").write_text("scene0800_00\n")
    record = preprocess("scannet", raw, tmp_path / "out", workers=1, progress=False)["scenes"]["scene0800_00"]
    assert record["split"] == "test" and record["class_counts"] == [0] * 20 and record["ignored"] == 80
    test = datasets.build_dataset(DataConfig(dataset="scannet", root=str(tmp_path / "out")), "test")
    assert np.all(test[0]["point_labels"] == -100) and len(test[0]["points"]) == 80


def test_kitti_sequence_without_labels_and_cli(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    rng = np.random.default_rng(0)
    for seq, frame in (("00", "000000"), ("00", "000001"), ("11", "000000")):
        folder = tmp_path / "raw" / "sequences" / seq
        (folder / "velodyne").mkdir(parents=True, exist_ok=True)
        rng.random((500, 4)).astype(np.float32).tofile(folder / "velodyne" / f"{frame}.bin")
        if seq == "00":
            (folder / "labels").mkdir(exist_ok=True)
            rng.choice(np.array([10, 40, 252 | (7 << 16)], np.uint32), 500).tofile(folder / "labels" / f"{frame}.label")
    root = Path(__file__).resolve().parents[2]
    run = subprocess.run([sys.executable, "-m", "scripts.preprocess", "semantickitti", "--input", str(tmp_path / "raw"),
                          "--output", str(tmp_path / "out"), "--workers", "2"], cwd=root, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "3 scenes, 1500 points, 0 skipped" in run.stdout and "preprocess semantickitti" in run.stderr  # tqdm bar
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    test_frame = manifest["scenes"]["11_000000"]
    assert test_frame["label"] is None and test_frame["ignored"] == 500 and test_frame["split"] == "11"
    labelled = manifest["scenes"]["00_000001"]
    assert sum(labelled["class_counts"]) == 500 and labelled["ignored"] == 0


def test_rerun_redoes_a_scene_whose_raw_files_changed(tmp_path):
    # Regression: a labels.ply replaced after preprocessing was ignored by a re-run (stale labels).
    raw = _tree(tmp_path)
    out = tmp_path / "out"
    first = preprocess("scannet", raw, out, workers=1, progress=False)
    assert first["reuse"] == {"reused": 0, "redone": 0, "new": 4}
    xyz, rgb, labels = random_scene(150, seed=1)
    relabelled = np.where(labels == 1, 2, 1).astype(np.uint16)  # wall <-> floor everywhere
    make_scannet_tree(tmp_path / "raw", {"scene0001_00": (xyz, rgb, relabelled)},
                      {"train": ["scene0000_00", "scene0001_00", "scene0002_00"], "val": ["scene0003_00"]})
    label_file = raw / "scans" / "scene0001_00" / "scene0001_00_vh_clean_2.labels.ply"
    os.utime(label_file, ns=(1, 1))  # a changed file whose size may be the same: the mtime tells
    second = preprocess("scannet", raw, out, workers=1, progress=False)
    assert second["reuse"] == {"reused": 3, "redone": 1, "new": 0}
    stored = np.load(store.scene_dir(out, "scene0001_00") / "label.npy")
    expected = np.where(relabelled == 1, 0, 1)  # NYU40 1 = wall = class 0, 2 = floor = class 1
    np.testing.assert_array_equal(stored, expected)
    assert second["scenes"]["scene0001_00"]["class_counts"] != first["scenes"]["scene0001_00"]["class_counts"]
    assert not [p for p in (out / "scenes").iterdir() if p.name.startswith(store.TMP_PREFIX)]
    assert preprocess("scannet", raw, out, workers=1, progress=False)["reuse"]["reused"] == 4


def test_scene_written_before_fingerprints_is_redone(tmp_path):
    raw = _tree(tmp_path, n=1)
    out = tmp_path / "out"
    preprocess("scannet", raw, out, workers=1, progress=False)
    path = store.scene_dir(out, "scene0000_00") / store.SCENE_JSON
    record = json.loads(path.read_text())
    del record["inputs"]
    path.write_text(json.dumps(record))
    assert preprocess("scannet", raw, out, workers=1, progress=False)["reuse"]["redone"] == 1
