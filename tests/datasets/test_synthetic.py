"""Synthetic indoor scenes: official ScanNet / S3DIS layouts read back by plyfile and np.loadtxt,
determinism and idempotence, label id sets, and geometry that makes sense (no interpenetrating
furniture, floor at z = 0, S3DIS room files = concatenation of their annotations)."""
import re

import numpy as np
import pytest

from data_helpers import tree_bytes
from datasets.synthetic import generate, rooms

plyfile = pytest.importorskip("plyfile", reason="plyfile is needed to read ScanNet PLY files")

NYU40_BENCHMARK = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 14, 16, 24, 28, 33, 34, 36, 39}
S3DIS_FILE_CLASSES = {"ceiling", "floor", "wall", "beam", "column", "window", "door", "table", "chair", "sofa",
                      "bookcase", "board", "clutter", "stairs"}
POINTS = 6000  # small scenes keep the tests fast


@pytest.fixture(scope="module")
def scannet_dir(tmp_path_factory):
    return generate("scannet", tmp_path_factory.mktemp("scannet"), 3, seed=7, points_per_scene=POINTS)


@pytest.fixture(scope="module")
def s3dis_dir(tmp_path_factory):
    return generate("s3dis", tmp_path_factory.mktemp("s3dis"), 7, seed=3, points_per_scene=POINTS)


def test_scannet_layout_and_splits(scannet_dir):
    splits = {s: (scannet_dir / f"scannetv2_{s}.txt").read_text().split() for s in ("train", "val", "test")}
    assert splits == {"train": ["scene0000_00"], "val": ["scene0001_00"], "test": ["scene0002_00"]}
    for scene in splits["train"] + splits["val"]:
        folder = scannet_dir / "scans" / scene
        assert sorted(p.name for p in folder.iterdir()) == [f"{scene}_vh_clean_2.labels.ply", f"{scene}_vh_clean_2.ply"]
    test_folder = scannet_dir / "scans_test" / "scene0002_00"
    assert [p.name for p in test_folder.iterdir()] == ["scene0002_00_vh_clean_2.ply"]  # no labels for test


def test_scannet_ply_fields_read_back_by_plyfile(scannet_dir):
    scene = "scene0000_00"
    mesh = plyfile.PlyData.read(str(scannet_dir / "scans" / scene / f"{scene}_vh_clean_2.ply"))
    labels = plyfile.PlyData.read(str(scannet_dir / "scans" / scene / f"{scene}_vh_clean_2.labels.ply"))
    for ply in (mesh, labels):
        assert not ply.text and ply.byte_order == "<"
    v, lv = mesh["vertex"].data, labels["vertex"].data
    assert [(p.name, p.val_dtype) for p in mesh["vertex"].properties] == [
        ("x", "f4"), ("y", "f4"), ("z", "f4"), ("red", "u1"), ("green", "u1"), ("blue", "u1"), ("alpha", "u1")]
    assert [p.name for p in labels["vertex"].properties][-1] == "label"
    assert labels["vertex"].properties[-1].val_dtype == "u2"
    assert len(v) == len(lv) == POINTS
    for name in ("x", "y", "z", "red", "green", "blue", "alpha"):
        np.testing.assert_array_equal(v[name], lv[name])  # the same vertices in both files
    assert (v["alpha"] == 255).all()


def test_scannet_labels_cover_benchmark_ids_with_a_few_unknown(scannet_dir):
    for scene in ("scene0000_00", "scene0001_00"):
        label = plyfile.PlyData.read(str(scannet_dir / "scans" / scene / f"{scene}_vh_clean_2.labels.ply"))["vertex"]["label"]
        ids = set(np.unique(label).tolist())
        assert NYU40_BENCHMARK <= ids, f"missing classes {NYU40_BENCHMARK - ids}"
        assert ids <= NYU40_BENCHMARK | {0, 50}
        for odd in (0, 50):  # present, as in real files, but only a few vertices
            assert 0 < (label == odd).sum() < 0.02 * len(label)


def test_scannet_geometry_is_sensible(scannet_dir):
    scene = "scene0001_00"
    v = plyfile.PlyData.read(str(scannet_dir / "scans" / scene / f"{scene}_vh_clean_2.labels.ply"))["vertex"].data
    z, label = v["z"], v["label"]
    assert np.abs(z[label == 2]).max() < 0.03  # floor at z = 0 (5 mm sensor noise)
    assert z.max() < 3.1  # no ceiling: nothing above the walls
    for nyu, lo, hi in ((11, 1.0, 2.5), (9, 0.8, 2.3), (4, 0.0, 1.1), (5, 0.0, 1.0), (36, 0.0, 0.6), (8, 0.0, 2.1)):
        assert lo - 0.03 <= z[label == nyu].min() and z[label == nyu].max() <= hi + 0.03, nyu
    x, y = v["x"], v["y"]
    walls = label == 1
    on_boundary = np.minimum.reduce([np.abs(x[walls] - x.min()), np.abs(x[walls] - x[label == 2].max()),
                                     np.abs(y[walls] - y.min()), np.abs(y[walls] - y[label == 2].max())])
    assert np.median(on_boundary) < 0.03  # walls bound the floor


@pytest.mark.parametrize("seed", range(4))
def test_furniture_does_not_interpenetrate(seed):
    pieces, _ = rooms.studio_room(np.random.default_rng(seed))
    boxes = [(i, lo, hi) for i, p in enumerate(pieces) if not p.cuts for lo, hi in p.solids]
    for a in range(len(boxes)):
        for b in range(a + 1, len(boxes)):
            (i, lo1, hi1), (j, lo2, hi2) = boxes[a], boxes[b]
            if i != j:
                overlap = np.minimum(hi1, hi2) - np.maximum(lo1, lo2)
                assert overlap.min() <= 1e-9, (pieces[i].kind, pieces[j].kind, overlap)


def test_colour_is_informative_of_class(scannet_dir):
    """Nearest class-mean colour, fitted on one room and scored on another, is mostly right."""
    read = lambda s: plyfile.PlyData.read(str(scannet_dir / "scans" / s / f"{s}_vh_clean_2.labels.ply"))["vertex"].data
    fit, held = read("scene0000_00"), read("scene0001_00")
    classes = sorted(NYU40_BENCHMARK)
    rgb = lambda v: np.stack([v["red"], v["green"], v["blue"]], 1).astype(float)
    means = np.stack([rgb(fit)[fit["label"] == c].mean(0) for c in classes])
    keep = np.isin(held["label"], classes)
    guess = np.array(classes)[((rgb(held)[keep, None, :] - means[None]) ** 2).sum(-1).argmin(1)]
    assert (guess == held["label"][keep]).mean() > 0.9


def test_scannet_deterministic_and_idempotent(tmp_path, scannet_dir):
    again = generate("scannet", tmp_path / "a", 3, seed=7, points_per_scene=POINTS)
    assert tree_bytes(again) == tree_bytes(scannet_dir)
    other = generate("scannet", tmp_path / "b", 1, seed=8, points_per_scene=POINTS)
    name = "scans/scene0000_00/scene0000_00_vh_clean_2.ply"
    assert (other / name).read_bytes() != (again / name).read_bytes()
    stamps = {p: p.stat().st_mtime_ns for p in again.rglob("*.ply")}
    victim = again / "scans" / "scene0001_00" / "scene0001_00_vh_clean_2.labels.ply"
    victim.unlink()
    generate("scannet", again, 3, seed=7, points_per_scene=POINTS)
    assert tree_bytes(again) == tree_bytes(scannet_dir)  # the missing file came back identical
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items() if p != victim)  # the rest untouched
    assert not list(again.rglob(".*tmp*"))  # no temporary files left


def test_s3dis_layout_and_line_format(s3dis_dir):
    areas = sorted(p.name for p in s3dis_dir.iterdir())
    assert areas == [f"Area_{k}" for k in range(1, 7)]
    line = re.compile(r"^-?\d+\.\d{6} -?\d+\.\d{6} -?\d+\.\d{6} \d{1,3} \d{1,3} \d{1,3}$")
    for room in (p for p in s3dis_dir.glob("Area_*/*") if p.is_dir()):
        annotations = sorted((room / "Annotations").glob("*.txt"))
        names = {p.stem.rsplit("_", 1)[0] for p in annotations}
        assert names <= S3DIS_FILE_CLASSES
        assert {"ceiling", "floor", "wall", "door"} <= names
        text = (room / f"{room.name}.txt").read_text()
        assert all(line.match(row) for row in text.splitlines()[:200])
        rows = np.loadtxt(room / f"{room.name}.txt")
        assert rows.shape == (POINTS, 6)
        assert rows[:, 3:].min() >= 0 and rows[:, 3:].max() <= 255


def test_s3dis_room_file_is_concatenation_of_annotations(s3dis_dir):
    for room in (p for p in s3dis_dir.glob("Area_*/*") if p.is_dir()):
        parts = [p.read_text() for p in sorted((room / "Annotations").glob("*.txt"))]
        whole = (room / f"{room.name}.txt").read_text()
        assert sorted(whole.splitlines()) == sorted("".join(parts).splitlines())
        # and literally a concatenation: every annotation file is one contiguous block of the room file
        assert all(part in whole for part in parts)


def test_s3dis_rooms_have_ceiling_above_floor(s3dis_dir):
    room = s3dis_dir / "Area_1" / "office_1" / "Annotations"
    floor, ceiling = np.loadtxt(room / "floor_1.txt"), np.loadtxt(room / "ceiling_1.txt")
    assert np.ptp(floor[:, 2]) < 0.05 and np.ptp(ceiling[:, 2]) < 0.05
    assert 2.8 < ceiling[:, 2].mean() - floor[:, 2].mean() < 3.4


def test_s3dis_stairs_occasionally():
    found = [any(p.kind == "stairs" for p in rooms.s3dis_room(np.random.default_rng(s), "hallway")[0])
             for s in range(20)]
    assert 0 < sum(found) < 20


def test_s3dis_deterministic(tmp_path, s3dis_dir):
    again = generate("s3dis", tmp_path / "a", 7, seed=3, points_per_scene=POINTS)
    assert tree_bytes(again) == tree_bytes(s3dis_dir)


@pytest.mark.parametrize("kind, count, kwargs, message", [
    ("nuscenes", 1, {}, "unknown dataset 'nuscenes' for 'synthetic kind'"),
    ("scannet", -1, {}, "num_scenes must be >= 0, got -1"),
    ("scannet", 1, {"points_per_scene": 10}, "points_per_scene must be >= 1000, got 10"),
    ("s3dis", 1, {"points_per_scene": 10}, "points_per_scene must be >= 1000, got 10"),
    ("semantickitti", 1, {"azimuth_steps": 4}, "azimuth_steps must be >= 16, got 4"),
])
def test_generate_rejects_bad_arguments(tmp_path, kind, count, kwargs, message):
    with pytest.raises(ValueError, match=message):
        generate(kind, tmp_path, count, **kwargs)
    assert not any(tmp_path.iterdir())  # nothing written
