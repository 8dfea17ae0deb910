"""Every kind of bad input gives one line naming the file and the fault, or a counted skip."""

import numpy as np
import pytest

from data_helpers import damage_stored, make_scannet_tree, preprocess_fails, random_scene, skip_counted, write_ply
from datasets.errors import DataFormatError, DatasetRootError
from datasets.preprocessing import preprocess
from lib.config.schema_data import DataConfig


# ---------------------------------------------------------------- ScanNet
def test_missing_raw_folder(tmp_path):
    preprocess_fails("scannet", tmp_path / "nowhere", tmp_path, "not found", "nowhere")
    preprocess_fails("s3dis", tmp_path / "nowhere", tmp_path, "not found", "nowhere")
    preprocess_fails("semantickitti", tmp_path / "nowhere", tmp_path, "not found", "sequences")


def test_missing_split_file(tmp_path):
    raw = make_scannet_tree(tmp_path / "raw", {"scene0000_00": random_scene()})
    (raw / "scannetv2_val.txt").unlink()
    preprocess_fails("scannet", raw, tmp_path, "missing ScanNet split file", "scannetv2_val.txt")


def test_missing_scene_folder(tmp_path):
    import datasets

    raw = make_scannet_tree(tmp_path / "raw", {"scene0000_00": random_scene()},
                            {"train": ["scene0000_00", "scene0009_00"], "val": []})
    preprocess_fails("scannet", raw, tmp_path, "missing", "scene0009_00")
    manifest = skip_counted("scannet", raw, tmp_path, "scene0009_00")
    assert list(manifest["scenes"]) == ["scene0000_00"]
    # loading a manifest with skipped scenes: strict refuses, lenient warns and goes on
    cfg = DataConfig(dataset="scannet", root=str(tmp_path / "out_lenient"))
    with pytest.raises(DataFormatError, match="1 scene\\(s\\) were skipped .* scene0009_00"):
        datasets.build_dataset(cfg, "train")
    cfg.strict = False
    with pytest.warns(UserWarning, match="1 scene"):
        assert len(datasets.build_dataset(cfg, "train")) == 1


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_truncated_or_corrupt_ply(tmp_path, damage):
    raw = make_scannet_tree(tmp_path / "raw", {"scene0000_00": random_scene(), "scene0001_00": random_scene(seed=1)})
    mesh = raw / "scans" / "scene0001_00" / "scene0001_00_vh_clean_2.ply"
    data = mesh.read_bytes()
    mesh.write_bytes(data[: len(data) - 100] if damage == "truncated" else b"ply\nformat nonsense\n" + data[40:])
    preprocess_fails("scannet", raw, tmp_path, "truncated or corrupt PLY", "scene0001_00_vh_clean_2.ply")
    skip_counted("scannet", raw, tmp_path, "scene0001_00")


def test_ply_without_needed_fields(tmp_path):
    raw = make_scannet_tree(tmp_path / "raw", {"scene0000_00": random_scene()})
    xyz, _, labels = random_scene()
    folder = raw / "scans" / "scene0000_00"
    write_ply(folder / "scene0000_00_vh_clean_2.ply", {"x": xyz[:, 0], "y": xyz[:, 1], "z": xyz[:, 2]})
    preprocess_fails("scannet", raw, tmp_path, "lacks field(s) red, green, blue", "scene0000_00_vh_clean_2.ply")
    raw = make_scannet_tree(tmp_path / "raw2", {"scene0000_00": random_scene()})
    write_ply(raw / "scans" / "scene0000_00" / "scene0000_00_vh_clean_2.labels.ply",
              {"x": xyz[:, 0], "y": xyz[:, 1], "z": xyz[:, 2]})
    preprocess_fails("scannet", raw, tmp_path, "lacks field(s) label", "labels.ply")


def test_label_count_differs_from_points(tmp_path):
    xyz, rgb, labels = random_scene(100)
    raw = make_scannet_tree(tmp_path / "raw", {"scene0000_00": (xyz, rgb, labels)})
    write_ply(raw / "scans" / "scene0000_00" / "scene0000_00_vh_clean_2.labels.ply",
              {"x": xyz[:90, 0], "label": labels[:90]})
    preprocess_fails("scannet", raw, tmp_path, "90 labelled vertices but the mesh has 100", "labels.ply")


def test_nan_coordinates(tmp_path):
    xyz, rgb, labels = random_scene(50)
    xyz[7, 1] = np.nan
    xyz[9, 0] = np.inf
    raw = make_scannet_tree(tmp_path / "raw", {"scene0000_00": (xyz, rgb, labels)})
    preprocess_fails("scannet", raw, tmp_path, "2 vertices with NaN/inf", "scene0000_00_vh_clean_2.ply")
    skip_counted("scannet", raw, tmp_path, "scene0000_00")


def test_empty_scene(tmp_path):
    empty = (np.zeros((0, 3), np.float32), np.zeros((0, 3), np.uint8), np.zeros(0, np.uint16))
    raw = make_scannet_tree(tmp_path / "raw", {"scene0000_00": empty})
    preprocess_fails("scannet", raw, tmp_path, "empty scene", "scene0000_00_vh_clean_2.ply")


def test_scannet_ids_outside_nyu40_become_ignore_and_are_counted(tmp_path):
    xyz, rgb, labels = random_scene(300)
    labels[:5] = 50
    labels[5:7] = 1000
    raw = make_scannet_tree(tmp_path / "raw", {"scene0000_00": (xyz, rgb, labels)})
    record = preprocess("scannet", raw, tmp_path / "out", workers=1, progress=False)["scenes"]["scene0000_00"]
    assert record["invalid_ids"] == {"50": 5, "1000": 2}
    benchmark = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 14, 16, 24, 28, 33, 34, 36, 39]
    assert record["class_counts"] == [int(np.sum(labels == i)) for i in benchmark]
    assert record["ignored"] == 300 - sum(record["class_counts"])  # includes the 7 invalid ids
    stored = np.load(tmp_path / "out" / "scenes" / "scene0000_00" / "label.npy")
    assert np.all(stored[:7] == -100)


# ---------------------------------------------------------------- SemanticKITTI
def _kitti_tree(root, frames):
    """frames = {frame: (points float32 [P, 4] or raw bytes, labels uint32 [P] or raw bytes)}."""
    for frame, (points, labels) in frames.items():
        for sub, arr, ext in (("velodyne", points, "bin"), ("labels", labels, "label")):
            folder = root / "sequences" / "00" / sub
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{frame}.{ext}").write_bytes(arr if isinstance(arr, bytes) else arr.tobytes())
    return root


def _frame(n=64, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, 4)).astype(np.float32), rng.choice([0, 10, 40, 252], n).astype(np.uint32)


def test_kitti_bin_size_not_multiple_of_16(tmp_path):
    points, labels = _frame()
    raw = _kitti_tree(tmp_path / "raw", {"000000": (points.tobytes()[:-4], labels)})
    preprocess_fails("semantickitti", raw, tmp_path, "not a multiple of 16", "000000.bin")


def test_kitti_label_count_differs(tmp_path):
    points, labels = _frame()
    raw = _kitti_tree(tmp_path / "raw", {"000000": (points, labels[:-3]), "000001": _frame(seed=1)})
    preprocess_fails("semantickitti", raw, tmp_path, "61 labels for 64 points", "000000.label")
    skip_counted("semantickitti", raw, tmp_path, "00_000000")


def test_kitti_nan_empty_and_unknown_ids(tmp_path):
    points, labels = _frame()
    points[3, 2] = np.nan
    preprocess_fails("semantickitti", _kitti_tree(tmp_path / "a", {"000000": (points, labels)}), tmp_path,
           "1 points with NaN/inf", "000000.bin")
    preprocess_fails("semantickitti", _kitti_tree(tmp_path / "b", {"000000": (b"", b"")}), tmp_path, "empty scene", "000000.bin")
    points, labels = _frame()
    labels[5] = 77 | (3 << 16)  # 77 is no SemanticKITTI id; the instance bits must not matter
    preprocess_fails("semantickitti", _kitti_tree(tmp_path / "c", {"000000": (points, labels)}), tmp_path,
           "label ids out of range (not in learning_map): [77]", "000000.label")


# ---------------------------------------------------------------- loading
def test_missing_data_root_names_folder_and_command(tmp_path):
    import datasets

    missing = tmp_path / "not_there"
    with pytest.raises(DatasetRootError) as err:
        datasets.build_dataset(DataConfig(dataset="s3dis", root=str(missing), raw_root="/raw/s3dis"), "train")
    message = str(err.value)
    assert "\n" not in message and str(missing) in message
    assert f"python -m scripts.preprocess s3dis --input /raw/s3dis --output {missing}" in message


def test_loaded_labels_out_of_range(tmp_path):
    import datasets

    raw = make_scannet_tree(tmp_path / "raw", {"scene0000_00": random_scene()})
    out = tmp_path / "out"
    preprocess("scannet", raw, out, workers=1, progress=False)
    damage_stored(out, "scene0000_00", "label", 4, 20)
    ds = datasets.build_dataset(DataConfig(dataset="scannet", root=str(out)), "train")
    with pytest.raises(DataFormatError, match="label id 20 out of range 0..19"):
        ds[0]


def test_cli_reports_one_line_and_exit_code(tmp_path, capsys):
    from scripts.preprocess import main

    assert main(["scannet", "--input", str(tmp_path / "nowhere"), "--output", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("error: ") and "nowhere" in err
    assert main(["scanet", "--input", str(tmp_path), "--output", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: unknown dataset 'scanet' for 'DATASET'; did you mean 'scannet'?") and "\n" not in err
