"""Synthetic SemanticKITTI sweeps: files read back with the official dtypes, ids from the official
label config, the sensor model (beam elevations, azimuth grid, max range) and every labelled point
lying on a primitive of its class (checked with geometry written here, not the ray caster)."""
from pathlib import Path

import numpy as np
import pytest

from data_helpers import tree_bytes
from datasets.synthetic import generate, kitti

yaml = pytest.importorskip("yaml", reason="pyyaml is needed to read the official label config")

STEPS = 400  # azimuth columns: small frames keep the tests fast
SEED = 5
OFFICIAL_CONFIG = Path(__file__).resolve().parents[2] / "datasets" / "semantic-kitti.yaml"


def _read(root: Path, seq: str, frame: int):
    points = np.fromfile(root / "sequences" / seq / "velodyne" / f"{frame:06d}.bin", dtype=np.float32)
    assert points.size % 4 == 0
    points = points.reshape(-1, 4)
    label_path = root / "sequences" / seq / "labels" / f"{frame:06d}.label"
    labels = np.fromfile(label_path, dtype=np.uint32) if label_path.exists() else None
    return points, labels


@pytest.fixture(scope="module")
def kitti_dir(tmp_path_factory):
    return generate("semantickitti", tmp_path_factory.mktemp("kitti"), 6, seed=SEED, azimuth_steps=STEPS)


def test_sequences_and_frames(kitti_dir):
    seqs = kitti_dir / "sequences"
    listing = {p.relative_to(seqs).as_posix() for p in seqs.rglob("*") if p.is_file()}
    train = {f"00/{d}/{f:06d}.{e}" for f in range(4) for d, e in (("velodyne", "bin"), ("labels", "label"))}
    extra = {f"{seq}/{name}.txt" for seq in ("00", "08", "11") for name in ("calib", "poses", "times")}
    assert listing == train | extra | {"08/velodyne/000000.bin", "08/labels/000000.label", "11/velodyne/000000.bin"}
    assert len((seqs / "00" / "poses.txt").read_text().splitlines()) == 4


def _matrix(row: str) -> np.ndarray:
    return np.vstack([np.array(row.split(), float).reshape(3, 4), [0, 0, 0, 1]])


def test_poses_and_calib_register_consecutive_frames(kitti_dir):
    """Poles and trunks of frame 3, moved into frame 0 by poses.txt and Tr, land on frame 0's cylinders."""
    seq = kitti_dir / "sequences" / "00"
    calib = dict(line.split(":", 1) for line in (seq / "calib.txt").read_text().splitlines())
    assert set(calib) == {"P0", "P1", "P2", "P3", "Tr"}
    tr = _matrix(calib["Tr"])
    pose3 = _matrix((seq / "poses.txt").read_text().splitlines()[3])
    points, labels = _read(kitti_dir, "00", 3)
    sel = np.isin(labels & 0xFFFF, (71, 80))
    assert sel.sum() > 20
    homo = np.c_[points[sel, :3].astype(np.float64), np.ones(sel.sum())]
    in_frame0 = (np.linalg.inv(tr) @ pose3 @ tr @ homo.T).T[:, :3]
    cyl = _solids("00", 0, "vertical_cylinder", (71, 80))
    axis = np.array([[c.params["cx"], c.params["cy"]] for c in cyl])
    radius = np.array([c.params["r"] for c in cyl])
    d = np.linalg.norm(in_frame0[:, None, :2] - axis[None], axis=2)
    assert np.abs(d - radius[None]).min(1).max() < 0.1


def test_files_read_back_with_official_dtypes(kitti_dir):
    for seq, frame in (("00", 0), ("00", 3), ("08", 0)):
        points, labels = _read(kitti_dir, seq, frame)
        assert labels is not None and len(labels) == len(points) > 10_000
        assert np.isfinite(points).all()
        assert points[:, 3].min() >= 0 and points[:, 3].max() <= 1


def test_semantic_ids_are_official_and_instances_only_on_things(kitti_dir):
    learning_map = yaml.safe_load(OFFICIAL_CONFIG.read_text())["learning_map"]
    points, labels = _read(kitti_dir, "00", 1)
    semantic, instance = labels & 0xFFFF, labels >> 16
    assert set(np.unique(semantic).tolist()) <= set(learning_map)
    things = np.isin(semantic, (10, 252, 30))
    assert (instance[~things] == 0).all() and (instance[things] > 0).all()
    assert {40, 48, 50, 70, 72, 10} <= set(semantic.tolist())


def test_ranges_and_beam_geometry(kitti_dir):
    points, _ = _read(kitti_dir, "00", 2)
    xyz = points[:, :3].astype(np.float64)
    r = np.linalg.norm(xyz, axis=1)
    assert r.max() <= kitti.MAX_RANGE + 0.2 and r.min() > 0.5
    elevation = np.degrees(np.arcsin(xyz[:, 2] / r))
    beams = np.linspace(2.0, -24.8, 64)  # HDL-64E-like: 64 beams evenly from +2 to -24.8 deg
    nearest = np.abs(elevation[:, None] - beams[None]).min(1)
    assert nearest.max() < 1e-3  # range noise moves points along their ray, never off it
    assert len(np.unique(np.abs(elevation[:, None] - beams[None]).argmin(1))) > 50
    step = 360.0 / STEPS
    azimuth = np.degrees(np.arctan2(xyz[:, 1], xyz[:, 0])) + 180.0 - step / 2
    assert np.abs(azimuth / step - np.rint(azimuth / step)).max() < 1e-3


def _solids(seq, frame, shape, labels):
    return [s for s in kitti.frame_solids(SEED, seq, frame) if s.shape == shape and s.label in labels]


def _box_gap(xyz, solid):
    """Distance [P] from points to the (yawed) box surface, computed in the box frame."""
    c, h, yaw = np.asarray(solid.params["center"]), np.asarray(solid.params["half"]), solid.params["yaw"]
    rel = xyz - c
    rot = np.array([[np.cos(yaw), np.sin(yaw), 0], [-np.sin(yaw), np.cos(yaw), 0], [0, 0, 1]])
    q = np.abs(rel @ rot.T) - h
    outside = np.linalg.norm(np.maximum(q, 0), axis=1)
    return np.where(outside > 0, outside, -q.max(1))


def test_points_lie_on_primitives_of_their_class(kitti_dir):
    seq, frame = "00", 3
    points, labels = _read(kitti_dir, seq, frame)
    xyz, semantic = points[:, :3].astype(np.float64), labels & 0xFFFF
    ground = -kitti.SENSOR_HEIGHT
    tol = 0.1  # 5 sigma of the 2 cm range noise, plus float32 rounding

    def near_planes(ids, heights):
        z = xyz[np.isin(semantic, ids), 2]
        assert len(z) > 0, ids
        assert np.min(np.abs(z[:, None] - np.asarray(heights)[None] - ground), axis=1).max() < tol, ids

    near_planes((40, 60, 44), [0.0])  # road, lane marking, parking
    near_planes((72,), [0.05])  # terrain
    z = xyz[semantic == 48, 2] - ground  # sidewalk slab: top at 0.15, curb face below
    assert z.min() > -tol and z.max() < 0.15 + tol

    for ids, shape in (((80, 71), "vertical_cylinder"),):
        sel = np.isin(semantic, ids)
        cyl = _solids(seq, frame, shape, ids)
        axis = np.array([[c.params["cx"], c.params["cy"]] for c in cyl])
        radius = np.array([c.params["r"] for c in cyl])
        d = np.linalg.norm(xyz[sel, None, :2] - axis[None], axis=2)
        assert np.abs(d - radius[None]).min(1).max() < tol

    sel = semantic == 70
    ell = _solids(seq, frame, "ellipsoid", (70,))
    centre = np.array([e.params["center"] for e in ell])
    radii = np.array([e.params["radii"] for e in ell])
    rho = np.linalg.norm((xyz[sel, None, :] - centre[None]) / radii[None], axis=2)
    assert (np.abs(rho - 1) * radii.min(1)[None]).min(1).max() < tol

    for ids in ((10, 252), (50,), (30,), (51,), (81,)):
        sel = np.isin(semantic, ids)
        if not sel.any():
            continue
        gaps = np.stack([np.abs(_box_gap(xyz[sel], b)) for b in _solids(seq, frame, "box", ids)], 1)
        assert gaps.min(1).max() < tol, ids


def test_instances_group_points_of_one_object(kitti_dir):
    points, labels = _read(kitti_dir, "00", 0)
    semantic, instance = labels & 0xFFFF, labels >> 16
    cars = np.unique(instance[np.isin(semantic, (10, 252))])
    assert len(cars) >= 1
    for inst in cars:  # one car's points span at most a car (4.2 m long, plus noise)
        xy = points[instance == inst, :2]
        assert np.linalg.norm(xy.max(0) - xy.min(0)) < 5.0


def test_deterministic_and_idempotent(tmp_path, kitti_dir):
    again = generate("semantickitti", tmp_path / "k", 6, seed=SEED, azimuth_steps=STEPS)
    assert tree_bytes(again) == tree_bytes(kitti_dir)
    stamps = {p: p.stat().st_mtime_ns for p in again.rglob("*") if p.is_file()}
    generate("semantickitti", again, 6, seed=SEED, azimuth_steps=STEPS)
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items())
    other, _ = kitti.make_frame(SEED + 1, "00", 0, STEPS)
    assert len(other) > 0 and not np.array_equal(other, _read(kitti_dir, "00", 0)[0])
