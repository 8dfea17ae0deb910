"""Benchmark files in the official layouts (written by the dataset modules, dispatched by lib/export
through DatasetMeta.benchmark_writer), read back with numpy and checked against real scans."""
import numpy as np
import pytest

from datasets.meta import DatasetMeta
from datasets.registry import get_dataset
from datasets.scannet import NYU40_IDS
from datasets.scannet import write_benchmark_file as write_scannet
from datasets.semantickitti import kitti_frame
from datasets.semantickitti import write_benchmark_file as write_semantickitti
from lib.config.schema_eval import ExportConfig
from lib.export import PredictionExporter
from lib.metrics import raw_to_class
from tests.conftest import REAL_DATA

SCANNET_IDS = np.array(NYU40_IDS)
KITTI_INV = np.array([10, 11, 15, 18, 20, 30, 31, 32, 40, 44, 48, 49, 50, 51, 70, 71, 72, 80, 81])  # learning_map_inv
KITTI_DIR = REAL_DATA / "semantickitti" / "sequences" / "00"
SCANNET_SCAN = REAL_DATA / "scannet" / "scans" / "scene0000_00"


def _meta(benchmark, raw_ids, scene_info=None, writer=None):
    k = len(raw_ids)
    if benchmark and writer is None:
        writer = get_dataset(benchmark).write_benchmark
    return DatasetMeta(name=f"test-{benchmark}", class_names=[f"c{i}" for i in range(k)], in_channels=3,
                       palette=np.full((k, 3), 128, np.uint8), raw_ids=raw_ids, benchmark=benchmark,
                       convention="nan_absent", scene_info=scene_info or {}, benchmark_writer=writer)


def test_scannet_txt_one_nyu40_id_per_original_vertex(tmp_path):
    labels_ply = SCANNET_SCAN / "scene0000_00_vh_clean_2.labels.ply"
    if not labels_ply.is_file():
        pytest.skip(f"real ScanNet scan not found at {labels_ply}")
    from plyfile import PlyData

    gt_raw = PlyData.read(str(labels_ply))["vertex"].data["label"].astype(np.int64)
    pred = raw_to_class(gt_raw, SCANNET_IDS).numpy()
    pred[pred < 0] = 19  # unannotated vertices still need a prediction: otherfurniture
    path = write_scannet(tmp_path, "scene0000_00", pred, SCANNET_IDS)
    assert path == tmp_path / "scene0000_00.txt"
    back = np.loadtxt(path, dtype=np.int64)
    n_vertices = PlyData.read(str(SCANNET_SCAN / "scene0000_00_vh_clean_2.ply"))["vertex"].count
    assert back.shape == (n_vertices,)
    valid = np.isin(gt_raw, SCANNET_IDS)
    np.testing.assert_array_equal(back[valid], gt_raw[valid])  # the official ids come back
    assert (back[~valid] == 39).all()


def test_semantickitti_label_in_official_layout(tmp_path):
    label_file = KITTI_DIR / "labels" / "000000.label"
    if not label_file.is_file():
        pytest.skip(f"real SemanticKITTI frame not found at {label_file}")
    semantic = (np.fromfile(label_file, dtype=np.uint32) & 0xFFFF).astype(np.int64)
    n_points = (KITTI_DIR / "velodyne" / "000000.bin").stat().st_size // 16  # float32 x, y, z, remission
    assert semantic.shape == (n_points,)
    pred = raw_to_class(semantic, KITTI_INV).numpy()
    pred[pred < 0] = 8  # ids outside learning_map_inv (moving-*, unlabelled): predict road
    path = write_semantickitti(tmp_path, "00/000000", pred, KITTI_INV)
    assert path == tmp_path / "sequences" / "00" / "predictions" / "000000.label"
    back = np.fromfile(path, dtype=np.uint32)
    assert back.shape == (n_points,)
    static = np.isin(semantic, KITTI_INV)
    np.testing.assert_array_equal(back[static], semantic[static])
    assert (back[~static] == 40).all()
    assert (back >> 16 == 0).all()  # instance bits left empty


def test_kitti_frame_from_scene_info_or_name():
    assert kitti_frame("anything", {"sequence": 8, "frame": 12}) == ("08", "000012")
    assert kitti_frame("08_000123") == ("08", "000123")
    assert kitti_frame("sequences/11/velodyne/000004.bin") == ("11", "000004")
    with pytest.raises(ValueError, match="cannot tell the SemanticKITTI sequence"):
        kitti_frame("scene0000_00")


def test_prediction_outside_the_classes_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"scene\.txt: 1 predictions outside \[0, 20\) \(first -100\)"):
        write_scannet(tmp_path, "scene", np.array([0, -100, 3]), SCANNET_IDS)


def test_exporter_writes_every_enabled_format(tmp_path):
    meta = _meta("semantickitti", KITTI_INV, {"frame-a": {"sequence": 8, "frame": 3}})
    exporter = PredictionExporter(ExportConfig(ply=True, benchmark=True), meta, tmp_path)
    points = np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32)
    written = exporter.add("frame-a", points, np.array([0, 1, 2, 18]), labels=np.array([0, 1, -100, 3]))
    root = tmp_path / "predictions"
    assert written == [root / "ply" / "frame-a.ply",
                       root / "semantickitti" / "sequences" / "08" / "predictions" / "000003.label"]
    assert np.fromfile(written[1], dtype=np.uint32).tolist() == [10, 11, 15, 81]


def test_exporter_refuses_benchmark_for_a_dataset_without_one(tmp_path):
    with pytest.raises(ValueError, match="has no benchmark format"):
        PredictionExporter(ExportConfig(benchmark=True), _meta(None, np.array([])), tmp_path)


def test_exporter_dispatches_to_the_writer_the_dataset_supplies(tmp_path):
    calls = []

    def csv_writer(out_dir, scene, points, pred, meta, labels=None):
        path = out_dir / f"{scene}.csv"
        out_dir.mkdir(parents=True, exist_ok=True)
        np.savetxt(path, np.asarray(meta.raw_ids)[pred], fmt="%d", delimiter=",")
        calls.append(scene)
        return path

    meta = _meta("mycsv", np.array([7, 9]), writer=csv_writer)
    exporter = PredictionExporter(ExportConfig(ply=False, benchmark=True), meta, tmp_path)
    written = exporter.add("s1", np.zeros((3, 3), np.float32), np.array([1, 0, 1]))
    assert written == [tmp_path / "predictions" / "mycsv" / "s1.csv"] and calls == ["s1"]
    assert np.loadtxt(written[0], dtype=np.int64).tolist() == [9, 7, 9]
    meta.benchmark_writer = None  # a benchmark name without a writer fails before any scene is predicted
    with pytest.raises(ValueError, match="no export writer for format 'mycsv'"):
        PredictionExporter(ExportConfig(benchmark=True), meta, tmp_path)
