"""Prediction PLYs of a real ScanNet scan, read back by plyfile (and Open3D where installed)."""
import numpy as np
import pytest

from datasets.scannet import NYU40_IDS as SCANNET_IDS
from lib import IGNORE_INDEX
from lib.export import write_ply
from lib.metrics import raw_to_class
from tests.conftest import REAL_DATA

SCENE = REAL_DATA / "scannet" / "scans" / "scene0000_00" / "scene0000_00_vh_clean_2.labels.ply"
PALETTE = np.array([[(37 * c) % 256, (91 * c + 50) % 256, (13 * c + 200) % 256] for c in range(20)], dtype=np.uint8)


@pytest.fixture(scope="module")
def scan():
    if not SCENE.is_file():
        pytest.skip(f"real ScanNet scan not found at {SCENE}")
    from plyfile import PlyData

    v = PlyData.read(str(SCENE))["vertex"].data
    points = np.stack([v["x"], v["y"], v["z"]], axis=1)
    labels = raw_to_class(v["label"].astype(np.int64), SCANNET_IDS).numpy()
    # a prediction that is right except on every 5th point, where it is shifted by one class
    pred = np.where(labels == IGNORE_INDEX, 0, labels)
    pred[::5] = (pred[::5] + 1) % 20
    return points, labels, pred


def test_ply_fields_and_colours_read_back_by_plyfile(tmp_path, scan):
    from plyfile import PlyData

    points, labels, pred = scan
    path = write_ply(tmp_path / "scene0000_00.ply", points, pred, PALETTE, labels)
    ply = PlyData.read(str(path))
    assert not ply.text and ply.byte_order == "<"
    vertex = ply["vertex"]
    names = [p.name for p in vertex.properties]
    assert names == ["x", "y", "z", "red", "green", "blue", "pred", "label", "error"]
    dtypes = vertex.data.dtype
    assert [dtypes[n].str for n in names[:6]] == ["<f4", "<f4", "<f4", "|u1", "|u1", "|u1"]
    data = vertex.data
    assert len(data) == len(points) == 50000
    np.testing.assert_array_equal(np.stack([data["x"], data["y"], data["z"]], 1), points.astype(np.float32))
    np.testing.assert_array_equal(np.stack([data["red"], data["green"], data["blue"]], 1), PALETTE[pred])
    np.testing.assert_array_equal(data["pred"], pred)
    np.testing.assert_array_equal(data["label"], labels)
    labelled = labels != IGNORE_INDEX
    expected_error = labelled & (np.arange(len(pred)) % 5 == 0)
    np.testing.assert_array_equal(data["error"].astype(bool), expected_error)


def test_ply_without_labels_has_no_label_fields_and_invalid_class_is_black(tmp_path):
    from plyfile import PlyData

    points = np.array([[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]])
    path = write_ply(tmp_path / "two.ply", points, np.array([1, 7]), PALETTE[:2])
    data = PlyData.read(str(path))["vertex"].data
    assert data.dtype.names == ("x", "y", "z", "red", "green", "blue", "pred")
    assert [tuple(data[c][0] for c in ("red", "green", "blue"))] == [tuple(PALETTE[1])]
    assert (data["red"][1], data["green"][1], data["blue"][1]) == (0, 0, 0)


def test_ply_shape_mismatch_is_a_one_line_error(tmp_path):
    with pytest.raises(ValueError, match=r"bad\.ply: points .* must be \[P, 3\]"):
        write_ply(tmp_path / "bad.ply", np.zeros((3, 3)), np.zeros(2, dtype=int), PALETTE)


def test_ply_opens_in_open3d(tmp_path, scan):
    try:
        import open3d as o3d
    except (ImportError, OSError) as exc:
        pytest.skip(f"open3d not importable ({type(exc).__name__}); pip install open3d and "
                    "apt-get install -y libusb-1.0-0 to run this check")
    points, labels, pred = scan
    path = write_ply(tmp_path / "scene.ply", points, pred, PALETTE, labels)
    cloud = o3d.io.read_point_cloud(str(path))
    assert len(cloud.points) == len(points)
    np.testing.assert_allclose(np.asarray(cloud.points), points, atol=1e-6)
    np.testing.assert_allclose(np.asarray(cloud.colors), PALETTE[pred] / 255.0, atol=1e-6)
