"""Single scans for --mode predict (datasets/scans.py): found in folders, named like their scenes,
read by preprocessing's own readers (same coordinates, colours and labels as the preprocessed
real scenes), labels mapped through a model card, missing features and LAS without laspy as one line."""
import sys

import numpy as np
import pytest

from datasets import scannet, semantickitti
from datasets.errors import DataFormatError, MissingPackageError
from datasets.scans import ScanDataset, check_inputs, list_scans, map_label_values, read_raw_scan, scan_names
from lib import IGNORE_INDEX
from lib.config import load_config
from tests.datasets.data_helpers import REAL_KITTI, REAL_SCANNET, needs_real_kitti, needs_real_scannet, write_ply


def _xyz_ply(path, n=50, rgb=False):
    rng = np.random.default_rng(0)
    cols = {k: rng.random(n).astype(np.float32) for k in "xyz"}
    if rgb:
        cols |= {k: rng.integers(0, 256, n).astype(np.uint8) for k in ("red", "green", "blue")}
    write_ply(path, cols)
    return path


def test_folders_are_searched_label_files_skipped_and_bad_paths_named(tmp_path):
    a = _xyz_ply(tmp_path / "site" / "a.ply")
    b = _xyz_ply(tmp_path / "site" / "deeper" / "b.ply")
    (tmp_path / "site" / "a.labels").write_text("1\n" * 50)
    _xyz_ply(tmp_path / "site" / "scene_vh_clean_2.labels.ply")
    (tmp_path / "site" / "notes.md").write_text("not a scan")
    assert list_scans([tmp_path / "site"]) == [a.resolve(), b.resolve()]
    assert list_scans([a, tmp_path / "site"]) == [a.resolve(), b.resolve()]  # each scan once
    with pytest.raises(DataFormatError, match="missing.ply: no such file"):
        list_scans([tmp_path / "missing.ply"])
    with pytest.raises(DataFormatError, match=r"notes.md: unsupported point file type '.md'"):
        list_scans([tmp_path / "site" / "notes.md"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataFormatError, match="empty: no point files"):
        list_scans([tmp_path / "empty"])


def test_scan_names_follow_the_datasets_scene_ids_and_are_unique(tmp_path):
    from pathlib import Path
    paths = [Path("/d/scans/scene0001_00/scene0001_00_vh_clean_2.ply"),
             Path("/k/sequences/08/velodyne/000123.bin"), Path("/x/lab1/room.ply"), Path("/x/lab2/room.ply"),
             Path("/y/cloud.las")]
    assert scan_names(paths) == ["scene0001_00", "08_000123", "lab1_room", "lab2_room", "cloud"]


@needs_real_scannet
def test_a_real_scannet_mesh_reads_as_preprocessing_stores_it():
    folder = REAL_SCANNET / "scans" / "scene0000_00"
    scan = read_raw_scan(folder / "scene0000_00_vh_clean_2.ply")
    arrays, record = scannet.read_raw_scene("scene0000_00", "train", folder)
    assert scan["format"] == "scannet" and scan["origin"] == record["origin"]
    np.testing.assert_array_equal(scan["coord"], arrays["coord"])
    np.testing.assert_array_equal(scan["color"], arrays["color"])
    # raw NYU40 ids through the card's values (one NYU40 id per class) = ScanNet's own mapping
    label, unscored = map_label_values(scan["raw_labels"], [[v] for v in scannet.NYU40_IDS])
    np.testing.assert_array_equal(label, arrays["label"].astype(np.int64))
    assert sum(unscored.values()) == record["ignored"] and 0 in unscored


@needs_real_kitti
def test_a_real_kitti_frame_reads_with_remission_and_learning_map_labels():
    path = REAL_KITTI / "sequences" / "00" / "velodyne" / "000000.bin"
    scan = read_raw_scan(path)
    points = np.fromfile(path, dtype=np.float32).reshape(-1, 4)
    np.testing.assert_array_equal(scan["coord"], points[:, :3])
    np.testing.assert_array_equal(scan["remission"], points[:, 3])
    meta = semantickitti.SemanticKitti().build_meta({"scenes": {}}, 1, [])
    label, _ = map_label_values(scan["raw_labels"], meta.values_of_classes())
    expected = semantickitti.read_labels(REAL_KITTI / "sequences" / "00" / "labels" / "000000.label", len(points))
    np.testing.assert_array_equal(label, expected)


def test_label_values_unknown_to_the_classes_are_ignored_and_counted():
    label, unscored = map_label_values(np.array([7, 1, 7, 0, 9, 1]), [[1], [7, 8]])
    assert label.tolist() == [1, 0, 1, IGNORE_INDEX, IGNORE_INDEX, 0]
    assert unscored == {0: 1, 9: 1}


def test_a_missing_feature_names_the_file_what_it_lacks_and_what_the_model_reads(tmp_path):
    path = _xyz_ply(tmp_path / "bare.ply")
    scan = read_raw_scan(path)
    check_inputs(path, scan, ["xyz", "ones"])
    with pytest.raises(DataFormatError) as err:
        check_inputs(path, scan, ["rgb", "xyz"])
    message = str(err.value)
    assert "bare.ply" in message and "colour" in message and "rgb, xyz" in message and "\n" not in message


def _las(path, n=300, scale=0.001, offset=(500000.0, 4000000.0, 100.0)):
    laspy = pytest.importorskip("laspy", reason="LAS files are written with laspy (pip install 'laspy[lazrs]')")
    rng = np.random.default_rng(1)
    header = laspy.LasHeader(point_format=3, version="1.2")
    header.scales, header.offsets = [scale] * 3, list(offset)
    las = laspy.LasData(header)
    las.x = offset[0] + rng.random(n) * 20
    las.y = offset[1] + rng.random(n) * 20
    las.z = offset[2] + rng.random(n) * 3
    rgb = rng.integers(0, 256, (n, 3))
    las.red, las.green, las.blue = (rgb[:, i] * 257 for i in range(3))  # 16-bit colour, as LAS stores it
    las.classification = rng.choice([2, 5, 6], n)
    las.write(str(path))
    return np.stack([las.x, las.y, las.z], 1), rgb, np.asarray(las.classification)


def test_a_georeferenced_las_scan_is_shifted_scaled_and_labelled(tmp_path):
    xyz, rgb, cls = _las(tmp_path / "tile.las")
    card = {"dataset": "folder", "class_names": ["ground", "vegetation", "building"], "in_channels": 3,
            "palette": [[1, 2, 3]] * 3, "raw_ids": [2, 5, 6], "benchmark": "labels", "convention": "nan_absent",
            "label_values": [[2], [3, 4, 5], [6]], "label_field": "classification", "voxel_size": 0.5,
            "features": ["rgb"]}
    ds = ScanDataset([tmp_path / "tile.las"], card, load_config("demo.yaml").data)
    scene = ds.read(0)
    origin = np.array(ds.records[0]["origin"])
    assert origin[0] == 500000.0 and origin[1] == 4000000.0  # whole metres below the minimum
    np.testing.assert_allclose(scene["coord"] + origin, xyz, atol=1e-3)
    np.testing.assert_array_equal(scene["color"], rgb)
    np.testing.assert_array_equal(scene["label"], np.searchsorted([2, 5, 6], cls))
    item = ds[0]
    assert item["feats"].shape[1] == 3 and len(item["inverse"]) == len(xyz)


def test_las_without_laspy_says_what_to_install(tmp_path, monkeypatch):
    _las(tmp_path / "tile.las")
    monkeypatch.setitem(sys.modules, "laspy", None)  # import laspy now raises ImportError
    with pytest.raises(MissingPackageError, match=r"tile.las: reading LAS/LAZ files needs laspy: pip install"):
        read_raw_scan(tmp_path / "tile.las")
