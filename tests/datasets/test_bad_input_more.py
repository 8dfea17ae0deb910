"""Bad input that used to pass silently: colour scales, far-away coordinates, stray points, labels of
another scan, PLY headers that undercount, scenes in two splits, SemanticKITTI sequences without labels."""
import json

import numpy as np
import pytest

from data_helpers import damage_stored, make_scannet_tree, preprocess_fails, random_scene, skip_counted, write_ply
from datasets.errors import DataFormatError
from datasets.preprocessing import preprocess
from lib.config.schema_data import DataConfig


def _mesh_columns(xyz, rgb_columns, labels=None):
    """The mesh's vertex columns, or (with `labels`) those of its labels.ply: x, y, z, label."""
    if labels is not None:
        return {"x": xyz[:, 0], "y": xyz[:, 1], "z": xyz[:, 2], "label": labels}
    return {"x": xyz[:, 0], "y": xyz[:, 1], "z": xyz[:, 2], "red": rgb_columns[0], "green": rgb_columns[1],
            "blue": rgb_columns[2]}


def _scene_tree(root, xyz, rgb_columns, labels, text=False):
    folder = root / "scans" / "scene0000_00"
    write_ply(folder / "scene0000_00_vh_clean_2.ply", _mesh_columns(xyz, rgb_columns), text=text)
    write_ply(folder / "scene0000_00_vh_clean_2.labels.ply", _mesh_columns(xyz, rgb_columns, labels), text=text)
    (root / "scannetv2_train.txt").write_text("scene0000_00\n")
    (root / "scannetv2_val.txt").write_text("")
    return root


def _stored(out, name):
    return np.load(out / "scenes" / "scene0000_00" / f"{name}.npy")


# ---------------------------------------------------------------- colours by stored type
@pytest.mark.parametrize("kind", ["float01", "uint16", "float0255"])
def test_colours_are_scaled_by_their_stored_type(tmp_path, kind):
    xyz, rgb, labels = random_scene(50)
    expected = rgb.astype(np.int64)  # 0..255
    if kind == "float01":
        columns = [(rgb[:, i] / 255.0).astype(np.float32) for i in range(3)]
    elif kind == "uint16":
        columns = [np.minimum(rgb[:, i].astype(np.int64) * 257 + 100, 65535).astype(np.uint16) for i in range(3)]  # /257 rounds back
    else:
        columns = [rgb[:, i].astype(np.float32) for i in range(3)]
    raw = _scene_tree(tmp_path / "raw", xyz, columns, labels)
    preprocess("scannet", raw, tmp_path / "out", workers=1, progress=False)
    stored = _stored(tmp_path / "out", "color")
    assert stored.dtype == np.uint8
    assert np.array_equal(stored.astype(np.int64), expected)


def test_colours_outside_any_scale_are_an_error(tmp_path):
    xyz, rgb, labels = random_scene(50)
    columns = [rgb[:, i].astype(np.float32) for i in range(3)]
    columns[1][7] = 300.0
    raw = _scene_tree(tmp_path / "raw", xyz, columns, labels)
    preprocess_fails("scannet", raw, tmp_path, "colours (red, green, blue, float32) outside", "scene0000_00_vh_clean_2.ply")


# ---------------------------------------------------------------- float64 far from the origin
def test_float64_coordinates_far_away_keep_their_centimetres(tmp_path):
    rng = np.random.default_rng(0)
    xyz = np.array([1_234_567.0, 7_654_321.0, 350.0]) + rng.integers(0, 300, (200, 3)) * 0.01  # cm grid
    rgb = rng.integers(0, 256, (200, 3)).astype(np.uint8)
    labels = rng.choice([1, 2, 5], 200).astype(np.uint16)
    raw = _scene_tree(tmp_path / "raw", xyz, [rgb[:, i] for i in range(3)], labels)
    manifest = preprocess("scannet", raw, tmp_path / "out", workers=1, progress=False)
    origin = np.array(manifest["scenes"]["scene0000_00"]["origin"])
    local = _stored(tmp_path / "out", "coord")
    assert local.dtype == np.float32 and np.abs(local).max() < 10
    assert np.abs(local.astype(np.float64) + origin - xyz).max() < 1e-4
    # the old path (cast first) lost them: float32 spacing at 7.6e6 m is 0.5 m
    assert np.abs(xyz.astype(np.float32).astype(np.float64) - xyz).max() > 0.01
    # a room near the origin keeps its coordinates unchanged (origin 0)
    raw2 = make_scannet_tree(tmp_path / "raw2", {"scene0000_00": random_scene()})
    manifest = preprocess("scannet", raw2, tmp_path / "out2", workers=1, progress=False)
    assert manifest["scenes"]["scene0000_00"]["origin"] == [0.0, 0.0, 0.0]
    assert np.array_equal(_stored(tmp_path / "out2", "coord"), random_scene()[0])


# ---------------------------------------------------------------- a stray point far away
@pytest.mark.parametrize("far", [1e5, 1e9, 3e38])
def test_a_stray_point_far_away_rejects_the_scene(tmp_path, far):
    xyz, rgb, labels = random_scene()
    xyz = xyz.astype(np.float64)
    xyz[17, 0] = far
    raw = make_scannet_tree(tmp_path / "raw", {"scene0000_00": (xyz, rgb, labels),
                                               "scene0001_00": random_scene(seed=1)})
    mesh = raw / "scans" / "scene0000_00" / "scene0000_00_vh_clean_2.ply"
    write_ply(mesh, _mesh_columns(xyz, [rgb[:, i] for i in range(3)]))
    message = preprocess_fails("scannet", raw, tmp_path, "1 point(s) lie more than 5000 m from the median", mesh.name)
    assert "along x" in message
    skip_counted("scannet", raw, tmp_path, "scene0000_00")


def test_voxelize_keys_cannot_overflow():
    from datasets.voxelize import MAX_CELLS, VoxelGridError, voxelize

    # two points 1e5 m apart at 2 cm: 5e6 cells per axis, the old int64 key (5e6^3) overflowed
    far = np.array([[0.0, 0.0, 0.0], [1e5, 1e5, 1e5]], dtype=np.float32)
    with pytest.raises(VoxelGridError, match="far from the others"):
        voxelize(far, 0.02)
    with pytest.raises(VoxelGridError, match="voxel size must be > 0"):
        voxelize(far, -0.02)
    # a wide but legal cloud (int64 keys): every point its own voxel, coordinates exact
    span = MAX_CELLS - 1
    pts = np.array([[0, 0, 0], [span, 0, 0], [0, span, 0], [0, 0, span], [span, span, span], [1, 1, 1]],
                   dtype=np.float64) + 0.5
    vox = voxelize(pts, 1.0)
    assert len(vox.coords) == 6 and (vox.coords >= 0).all()
    assert np.array_equal(vox.coords[vox.inverse], np.floor(pts).astype(np.int32))


def test_stray_point_in_a_stored_scene_names_the_scene(tmp_path):
    import datasets

    raw = make_scannet_tree(tmp_path / "raw", {"scene0000_00": random_scene()})
    out = tmp_path / "out"
    preprocess("scannet", raw, out, workers=1, progress=False)
    damage_stored(out, "scene0000_00", "coord", 3, 5e4)  # as an older preprocessing without the extent check wrote it
    ds = datasets.build_dataset(DataConfig(dataset="scannet", root=str(out), voxel_size=0.01), "train")
    with pytest.raises(DataFormatError, match="scene scene0000_00: points span .* along x"):
        ds[0]


# ---------------------------------------------------------------- labels of another scan
def test_labels_ply_of_another_scan_is_an_error(tmp_path):
    xyz, rgb, labels = random_scene()
    raw = make_scannet_tree(tmp_path / "raw", {"scene0000_00": (xyz, rgb, labels)})
    other, _, _ = random_scene(seed=5)  # same vertex count, other positions
    write_ply(raw / "scans" / "scene0000_00" / "scene0000_00_vh_clean_2.labels.ply",
              _mesh_columns(other, None, labels))
    preprocess_fails("scannet", raw, tmp_path, f"of {len(xyz)} vertices differ from scene0000_00_vh_clean_2.ply",
           "scene0000_00_vh_clean_2.labels.ply")


# ---------------------------------------------------------------- header undercounts the data
@pytest.mark.parametrize("text", [False, True])
def test_ply_header_declaring_fewer_vertices_is_an_error(tmp_path, text):
    xyz, rgb, labels = random_scene(20)
    raw = _scene_tree(tmp_path / "raw", xyz, [rgb[:, i] for i in range(3)], labels, text=text)
    mesh = raw / "scans" / "scene0000_00" / "scene0000_00_vh_clean_2.ply"
    data = mesh.read_bytes()
    assert b"element vertex 20\n" in data
    mesh.write_bytes(data.replace(b"element vertex 20\n", b"element vertex 18\n"))
    unit = "lines" if text else "bytes"
    expected = "2" if text else str(2 * (3 * 4 + 3))  # two rows of 3 float32 + 3 uchar
    preprocess_fails("scannet", raw, tmp_path, f"more data than its header declares: {expected} {unit} after the 18 vertex",
           mesh.name)


# ---------------------------------------------------------------- a scene in two splits
def test_scene_in_two_split_files_names_both(tmp_path):
    raw = make_scannet_tree(tmp_path / "raw", {"scene0000_00": random_scene(), "scene0001_00": random_scene(seed=1)},
                            {"train": ["scene0000_00", "scene0001_00"], "val": ["scene0001_00"]})
    message = preprocess_fails("scannet", raw, tmp_path, "scene scene0001_00 is also listed in", "scannetv2_val.txt")
    assert "scannetv2_train.txt" in message


# ---------------------------------------------------------------- SemanticKITTI
def _kitti_sequence(root, seq, frames, with_labels=True):
    rng = np.random.default_rng(int(seq))
    for frame in frames:
        velodyne = root / "sequences" / seq / "velodyne"
        velodyne.mkdir(parents=True, exist_ok=True)
        points = rng.random((64, 4)).astype(np.float32)
        points.tofile(velodyne / f"{frame}.bin")
        if with_labels:
            (root / "sequences" / seq / "labels").mkdir(exist_ok=True)
            rng.choice([0, 10, 40], 64).astype(np.uint32).tofile(root / "sequences" / seq / "labels" / f"{frame}.label")
    return root


def test_kitti_training_sequence_without_labels(tmp_path):
    raw = _kitti_sequence(tmp_path / "raw", "00", ["000000"])
    _kitti_sequence(raw, "05", ["000000", "000001"], with_labels=False)  # a training sequence
    _kitti_sequence(raw, "11", ["000000"], with_labels=False)  # test: no labels expected
    preprocess_fails("semantickitti", raw, tmp_path, "missing labels folder of sequence 05", "sequences/05/labels")
    manifest = skip_counted("semantickitti", raw, tmp_path, "05_000000")
    assert set(manifest["skipped"]) == {"05_000000", "05_000001"}
    assert "11_000000" in manifest["scenes"] and manifest["unlabelled"] == []


def test_kitti_training_frame_with_no_labelled_point_is_listed(tmp_path):
    raw = _kitti_sequence(tmp_path / "raw", "00", ["000000", "000001"])
    np.zeros(64, np.uint32).tofile(raw / "sequences" / "00" / "labels" / "000001.label")  # all "unlabeled"
    with pytest.warns(UserWarning, match="1 scene\\(s\\) of labelled splits have no labelled point"):
        manifest = preprocess("semantickitti", raw, tmp_path / "out", workers=1, progress=False)
    assert manifest["unlabelled"] == ["00_000001"]
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["unlabelled"] == ["00_000001"]


def test_kitti_bin_changed_after_preprocessing_blames_the_bin(tmp_path):
    import datasets

    raw = _kitti_sequence(tmp_path / "raw", "00", ["000000"])
    preprocess("semantickitti", raw, tmp_path / "out", workers=1, progress=False)
    bin_path = raw / "sequences" / "00" / "velodyne" / "000000.bin"
    np.random.default_rng(1).random((70, 4)).astype(np.float32).tofile(bin_path)
    cfg = DataConfig(dataset="semantickitti", root=str(tmp_path / "out"), splits={"train": ["00"]})
    ds = datasets.build_dataset(cfg, "train")
    with pytest.raises(DataFormatError) as err:
        ds[0]
    message = str(err.value)
    assert message.startswith(str(bin_path)) and "holds 70 points but 64 when preprocessed" in message


def test_kitti_absurd_coordinate_names_the_bin(tmp_path):
    raw = _kitti_sequence(tmp_path / "raw", "00", ["000000"])
    bin_path = raw / "sequences" / "00" / "velodyne" / "000000.bin"
    points = np.fromfile(bin_path, dtype=np.float32).reshape(-1, 4)
    points[9, 1] = 3e38  # finite, absurd
    points.tofile(bin_path)
    preprocess_fails("semantickitti", raw, tmp_path, "scene spans 3e+38 m along y", "000000.bin")


def test_s3dis_far_coordinates_keep_their_centimetres(tmp_path):
    room = tmp_path / "raw" / "Area_1" / "office_1" / "Annotations"
    room.mkdir(parents=True)
    rows = [f"{500000.01 + 0.01 * i:.2f} {4000000.02:.2f} {12.5 + 0.01 * i:.2f} 10 20 30" for i in range(50)]
    (room / "chair_1.txt").write_text("\n".join(rows) + "\n")
    manifest = preprocess("s3dis", tmp_path / "raw", tmp_path / "out", workers=1, progress=False)
    origin = np.array(manifest["scenes"]["Area_1_office_1"]["origin"])
    local = np.load(tmp_path / "out" / "scenes" / "Area_1_office_1" / "coord.npy")
    expected = np.loadtxt(room / "chair_1.txt")[:, :3]
    assert np.abs(local.astype(np.float64) + origin - expected).max() < 1e-4


def test_disk_full_while_preprocessing_names_the_file(tmp_path, monkeypatch, capsys):
    import datasets.store
    from scripts.preprocess import main

    real_save = np.save

    def save_to_full_disk(path, array):
        with open("/dev/full", "wb") as f:  # every write fails with ENOSPC, as on a full disk
            real_save(f, array)

    monkeypatch.setattr(datasets.store.np, "save", save_to_full_disk)
    raw = make_scannet_tree(tmp_path / "raw", {"scene0000_00": random_scene()})
    assert main(["scannet", "--input", str(raw), "--output", str(tmp_path / "out"), "--workers", "1"]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error: " in line]  # besides the bar
    assert len(errors) == 1
    message = errors[0].split("error: ", 1)[1]
    assert message.startswith("no space left writing") and message.endswith("coord.npy (No space left on device)")
    assert "scene0000_00" in message


def test_the_error_line_is_the_last_thing_preprocessing_prints(tmp_path):
    """The progress bar has drawn frames (two good scenes) when the third scene is bad: the bar's
    last frame must come before `error: ...`, which ends the output alone on its line."""
    import subprocess
    import sys

    from tests.conftest import ROOT

    names = ["scene0000_00", "scene0001_00", "scene0002_00"]
    raw = make_scannet_tree(tmp_path / "raw", {n: random_scene(seed=i) for i, n in enumerate(names)})
    (raw / "scans" / names[2] / f"{names[2]}_vh_clean_2.ply").write_bytes(b"ply\nformat garbage\n")
    done = subprocess.run([sys.executable, "-m", "scripts.preprocess", "scannet", "--input", str(raw),
                           "--output", str(tmp_path / "out"), "--workers", "1"], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    frames = [f for f in done.stderr.replace("\r", "\n").split("\n") if f.strip()]
    assert any(f.startswith("preprocess scannet") for f in frames), done.stderr  # the bar did draw
    assert frames[-1].startswith("error: ") and names[2] in frames[-1], done.stderr
    assert sum(f.startswith("error: ") for f in frames) == 1 and done.stderr.endswith("\n")
