"""The real scans go through preprocessing and loaders; counts checked against the raw files."""
import json

import numpy as np
import pytest
import yaml

from data_helpers import REAL_KITTI, REAL_SCANNET, needs_real_kitti, needs_real_scannet
from lib import IGNORE_INDEX
from lib.config.schema_data import DataConfig

# The ScanNet benchmark's 20 NYU40 ids, in class order (written here from the benchmark's list).
BENCHMARK_NYU40 = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 14, 16, 24, 28, 33, 34, 36, 39]

# The official SemanticKITTI learning_map (semantic-kitti-api config/semantic-kitti.yaml).
OFFICIAL_LEARNING_MAP = {0: 0, 1: 0, 10: 1, 11: 2, 13: 5, 15: 3, 16: 5, 18: 4, 20: 5, 30: 6, 31: 7, 32: 8, 40: 9,
                         44: 10, 48: 11, 49: 12, 50: 13, 51: 14, 52: 0, 60: 9, 70: 15, 71: 16, 72: 17, 80: 18,
                         81: 19, 99: 0, 252: 1, 253: 7, 254: 6, 255: 8, 256: 5, 257: 5, 258: 4, 259: 5}
OFFICIAL_LEARNING_MAP_INV = {0: 0, 1: 10, 2: 11, 3: 15, 4: 18, 5: 20, 6: 30, 7: 31, 8: 32, 9: 40, 10: 44, 11: 48,
                             12: 49, 13: 50, 14: 51, 15: 70, 16: 71, 17: 72, 18: 80, 19: 81}


@needs_real_scannet
def test_scannet_manifest_counts_match_labels_ply(scannet_root):
    from plyfile import PlyData

    manifest = json.loads((scannet_root / "manifest.json").read_text())
    assert manifest["dataset"] == "scannet" and manifest["num_classes"] == 20
    assert len(manifest["class_names"]) == 20 and manifest["skipped"] == {}
    split_of = {}
    for split in ("train", "val"):
        for name in (REAL_SCANNET / f"scannetv2_{split}.txt").read_text().split():
            split_of[name] = split
    assert set(manifest["scenes"]) == set(split_of)
    for name, record in manifest["scenes"].items():
        raw = PlyData.read(str(REAL_SCANNET / "scans" / name / f"{name}_vh_clean_2.labels.ply"))["vertex"]["label"]
        expected = [int(np.sum(raw == nyu)) for nyu in BENCHMARK_NYU40]
        assert record["class_counts"] == expected, name
        assert record["ignored"] == int(len(raw) - sum(expected))
        assert record["points"] == len(raw) and record["split"] == split_of[name]
        not_nyu40 = raw[raw > 40]
        assert record["invalid_ids"] == {str(i): int(np.sum(not_nyu40 == i)) for i in np.unique(not_nyu40)}


@needs_real_scannet
def test_scannet_loader_keeps_every_point_label(scannet_root):
    """Labels of label-pure voxels reach every original point through `inverse`; mixed voxels take
    the majority (mean quantization) or the drawn point's label (random quantization)."""
    from plyfile import PlyData

    import datasets

    for quantization in ("mean", "random"):
        ds = datasets.build_dataset(DataConfig(dataset="scannet", root=str(scannet_root), quantization=quantization), "val")
        item = ds[0]
        raw = np.asarray(PlyData.read(str(REAL_SCANNET / "scans" / item["scene"] /
                                          f"{item['scene']}_vh_clean_2.labels.ply"))["vertex"]["label"])
        lut = {nyu: c for c, nyu in enumerate(BENCHMARK_NYU40)}
        truth = np.array([lut.get(int(r), IGNORE_INDEX) for r in raw])
        np.testing.assert_array_equal(item["point_labels"], truth)
        inv = item["inverse"]
        assert inv.min() == 0 and inv.max() == len(item["coords"]) - 1
        per_voxel = {}
        for p, v in enumerate(inv):
            per_voxel.setdefault(int(v), []).append(int(truth[p]))
        for v, labels in per_voxel.items():
            if len(set(labels)) == 1:
                assert item["labels"][v] == labels[0]
            elif quantization == "random":
                assert item["labels"][v] in labels
            else:
                valid = [x for x in labels if x != IGNORE_INDEX]
                counts = {x: valid.count(x) for x in valid}
                best = max(counts.values())
                assert item["labels"][v] == min(x for x, c in counts.items() if c == best)
        pure_points = np.array([len(set(per_voxel[int(v)])) == 1 for v in inv])
        np.testing.assert_array_equal(item["labels"][inv][pure_points], truth[pure_points])
        assert pure_points.mean() > 0.9  # sanity: at 2 cm most points sit in label-pure voxels


@needs_real_kitti
def test_kitti_label_config_is_the_official_table():
    from datasets.semantickitti import LABEL_CONFIG

    cfg = yaml.safe_load(LABEL_CONFIG.read_text())
    assert cfg["learning_map"] == OFFICIAL_LEARNING_MAP
    assert cfg["learning_map_inv"] == OFFICIAL_LEARNING_MAP_INV


@needs_real_kitti
def test_kitti_frames_mapped_with_official_table(kitti_root):
    import datasets

    manifest = json.loads((kitti_root / "manifest.json").read_text())
    assert set(manifest["scenes"]) == {"00_000000", "00_000001"}
    ds = datasets.build_dataset(DataConfig(dataset="semantickitti", root=str(kitti_root), voxel_size=0.05), "train")
    assert ds.meta.num_classes == 19 and ds.meta.convention == "zero_absent"
    assert ds.meta.raw_ids.tolist() == [OFFICIAL_LEARNING_MAP_INV[c] for c in range(1, 20)]
    for index, scene in enumerate(ds.scene_ids):
        frame = scene.split("_")[1]
        raw = np.fromfile(REAL_KITTI / "sequences" / "00" / "labels" / f"{frame}.label", dtype=np.uint32)
        points = np.fromfile(REAL_KITTI / "sequences" / "00" / "velodyne" / f"{frame}.bin", dtype=np.float32).reshape(-1, 4)
        learning = np.array([OFFICIAL_LEARNING_MAP[int(s)] for s in raw & 0xFFFF])
        truth = np.where(learning == 0, IGNORE_INDEX, learning - 1)
        record = manifest["scenes"][scene]
        assert record["class_counts"] == [int(np.sum(learning == c)) for c in range(1, 20)]
        assert record["ignored"] == int(np.sum(learning == 0)) and record["points"] == len(points)
        item = ds.get_view(index)
        np.testing.assert_array_equal(item["point_labels"], truth)
        np.testing.assert_array_equal(item["points"], points[:, :3])
        assert ds.meta.scene_info[scene] == {"sequence": "00", "frame": frame}
        # back to raw ids as the benchmark writer does: learning_map_inv of class + 1
        valid = truth != IGNORE_INDEX
        back = ds.meta.raw_ids[truth[valid]]
        assert np.all(np.array([OFFICIAL_LEARNING_MAP[int(b)] for b in back]) == learning[valid])


@pytest.mark.parametrize("split", ["val"])
@needs_real_scannet
def test_scannet_meta(scannet_root, split):
    import datasets

    ds = datasets.build_dataset(DataConfig(dataset="scannet", root=str(scannet_root)), split)
    meta = ds.meta
    assert meta.name == "scannet" and meta.benchmark == "scannet" and meta.convention == "nan_absent"
    assert meta.palette.shape == (20, 3) and meta.palette.dtype == np.uint8
    assert meta.raw_ids.tolist() == BENCHMARK_NYU40 and meta.in_channels == 3
    assert sorted(ds.scene_ids) == sorted((REAL_SCANNET / "scannetv2_val.txt").read_text().split())
