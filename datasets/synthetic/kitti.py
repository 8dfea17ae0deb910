"""Synthetic LiDAR sweeps in the SemanticKITTI layout.

  OUT/sequences/NN/velodyne/FFFFFF.bin    float32 [P, 4]: x, y, z (metres, sensor frame), remission
  OUT/sequences/NN/labels/FFFFFF.label    uint32 [P]: raw semantic id | instance id << 16
  OUT/sequences/NN/{calib,poses,times}.txt  as in the odometry release (poses: camera 0, 3x4 rows)
Scene i of the generator goes to sequence 00 (train), 08 (val) or 11 (test, no labels) following
scenes.SPLIT_CYCLE; frames of one sequence are consecutive poses of a car driving along one street.

The street runs along +x: road (40) at z = 0, optional parking strips (44), raised sidewalks (48),
terrain (72), a dashed centre line (lane-marking 60), buildings (50), fences (51), trees (trunk 71 + crown 70), bushes (70), poles (80) with
traffic signs (81), parked cars (10) and moving cars (252), people (30); cars and people carry
instance ids. It is generated in 20 m segments, each from its own random stream, so a frame only
depends on (seed, sequence, frame). The sensor is an HDL-64E-like spinning LiDAR 1.73 m above the
road: 64 beams evenly spaced from +2 to -24.8 degrees elevation, `azimuth_steps` columns per turn,
range noise, ray dropout, 80 m maximum range.
"""
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import raycast
from .atomic import atomic_write, atomic_write_text
from .scenes import scene_rng, split_of

SEQUENCE_OF_SPLIT = {"train": "00", "val": "08", "test": "11"}
SENSOR_HEIGHT = 1.73  # metres above the road
ELEVATIONS_DEG = np.linspace(2.0, -24.8, 64)
MAX_RANGE = 80.0
RANGE_NOISE = 0.02  # metres, std
DROPOUT = 0.03  # fraction of rays without return
OUTLIERS = 0.0005  # fraction of returns at a spurious range, labelled outlier (1)
SEGMENT = 20.0  # metres of street per random stream
STEP = 1.0  # metres driven between frames
REMISSION = {40: 0.22, 44: 0.2, 48: 0.3, 72: 0.38, 50: 0.3, 51: 0.28, 70: 0.45, 71: 0.33, 80: 0.3,
             81: 0.85, 10: 0.4, 252: 0.4, 30: 0.25}
LANE_MARKING_REMISSION = 0.8
LANE_MARKING = 60  # dashed centre line painted on the road


@dataclass(frozen=True)
class Solid:
    """One primitive in world (or sensor) coordinates: shape is the name of a raycast function."""

    shape: str  # horizontal_rect | box | ellipsoid | vertical_cylinder
    params: dict
    label: int  # raw SemanticKITTI semantic id
    instance: int = 0
    xy_lo: tuple = (0.0, 0.0)  # horizontal bounding box, for culling
    xy_hi: tuple = (0.0, 0.0)

    def shifted(self, dx: float, dy: float, dz: float) -> "Solid":
        p = dict(self.params)
        if self.shape == "horizontal_rect":
            p.update(z=p["z"] + dz, x0=p["x0"] + dx, x1=p["x1"] + dx, y0=p["y0"] + dy, y1=p["y1"] + dy)
        elif self.shape == "vertical_cylinder":
            p.update(cx=p["cx"] + dx, cy=p["cy"] + dy, z0=p["z0"] + dz, z1=p["z1"] + dz)
        else:
            p["center"] = tuple(np.asarray(p["center"]) + (dx, dy, dz))
        return Solid(self.shape, p, self.label, self.instance,
                     (self.xy_lo[0] + dx, self.xy_lo[1] + dy), (self.xy_hi[0] + dx, self.xy_hi[1] + dy))


def _rect(z, x0, x1, y0, y1, label):
    return Solid("horizontal_rect", dict(z=z, x0=x0, x1=x1, y0=min(y0, y1), y1=max(y0, y1)), label,
                 xy_lo=(x0, min(y0, y1)), xy_hi=(x1, max(y0, y1)))


def _box(lo, hi, label, instance=0, yaw=0.0):
    lo, hi = np.minimum(lo, hi), np.maximum(lo, hi)
    center, half = (lo + hi) / 2, (hi - lo) / 2
    reach = np.hypot(half[0], half[1])  # bound for any yaw
    return Solid("box", dict(center=tuple(center), half=tuple(half), yaw=yaw), label, instance,
                 (center[0] - reach, center[1] - reach), (center[0] + reach, center[1] + reach))


def _ellipsoid(center, radii, label):
    c, r = np.asarray(center, float), np.asarray(radii, float)
    return Solid("ellipsoid", dict(center=tuple(c), radii=tuple(r)), label,
                 xy_lo=tuple(c[:2] - r[:2]), xy_hi=tuple(c[:2] + r[:2]))


def _cylinder(cx, cy, z0, z1, r, label):
    return Solid("vertical_cylinder", dict(cx=cx, cy=cy, z0=z0, z1=z1, r=r), label,
                 xy_lo=(cx - r, cy - r), xy_hi=(cx + r, cy + r))


def road_half_width(seed: int, seq: str) -> float:
    return float(scene_rng(seed, "semantickitti", int(seq), 0).uniform(3.5, 6.0))


def _car(x, y, yaw, label, instance):
    c, s = np.cos(yaw), np.sin(yaw)
    body = _box(np.array([x - 2.1, y - 0.9, 0.25]), np.array([x + 2.1, y + 0.9, 1.05]), label, instance)
    cabin_x = x - 0.3 * c
    cabin = _box(np.array([cabin_x - 1.2, y - 0.3 * s - 0.8, 1.05]),
                 np.array([cabin_x + 1.2, y - 0.3 * s + 0.8, 1.5]), label, instance)
    return [Solid("box", dict(b.params, yaw=yaw), label, instance, b.xy_lo, b.xy_hi) for b in (body, cabin)]


def segment_solids(seed: int, seq: str, s: int) -> list[Solid]:
    """Solids of street segment s (x in [20 s, 20 s + 20)) in world coordinates."""
    rng = scene_rng(seed, "semantickitti", int(seq), 1, s + 10_000)
    w = road_half_width(seed, seq)
    x0, x1 = s * SEGMENT, (s + 1) * SEGMENT
    out = [_rect(0.0, x0, x1, -w, w, 40)]
    inst = iter(range((s + 10_000) * 32 % 65_000 + 1, 65_536))  # unique per segment within a sequence
    if rng.random() < 0.5:  # a moving car in the opposite lane
        out += _car(rng.uniform(x0 + 2.5, x1 - 2.5), w / 2, rng.normal(0, 0.03), 252, next(inst))
    for side in (1.0, -1.0):
        edge = w
        if rng.random() < 0.4:
            out.append(_rect(0.0, x0, x1, side * w, side * (w + 2.5), 44))
            for xc in x0 + 3 + np.flatnonzero(rng.random(3) < 0.5) * 5.8:
                out += _car(xc + rng.uniform(-0.3, 0.3), side * (w + 1.25), rng.normal(0, 0.04), 10, next(inst))
            edge = w + 2.5
        walk = rng.uniform(2.0, 3.5)
        out.append(_box(np.array([x0, side * edge, 0.0]), np.array([x1, side * (edge + walk), 0.15]), 48))
        if rng.random() < 0.5:
            px, py = rng.uniform(x0 + 1, x1 - 1), side * (edge + 0.4)
            out.append(_cylinder(px, py, 0.15, rng.uniform(3.0, 6.0), rng.uniform(0.07, 0.12), 80))
            if rng.random() < 0.6:  # sign plate beside the pole, facing the traffic (thin along x)
                out.append(_box(np.array([px - 0.03, py - side * 0.12, 2.0]),
                                np.array([px + 0.03, py - side * 0.82, 2.7]), 81))
        for _ in range(int(rng.integers(0, 3))):
            cx, cy = rng.uniform(x0 + 0.5, x1 - 0.5), side * (edge + rng.uniform(1.0, walk - 0.4))
            out.append(_box(np.array([cx - 0.22, cy - 0.18, 0.15]), np.array([cx + 0.22, cy + 0.18, 1.85]), 30,
                            next(inst), yaw=rng.uniform(-np.pi, np.pi)))
        edge += walk
        green = rng.uniform(3.0, 7.0)
        out.append(_rect(0.05, x0, x1, side * edge, side * (edge + green), 72))
        if rng.random() < 0.3:
            out.append(_box(np.array([x0 + rng.uniform(0, 5), side * (edge + 0.1), 0.05]),
                            np.array([x1 - rng.uniform(0, 5), side * (edge + 0.15), rng.uniform(1.0, 1.6)]), 51))
        for _ in range(int(rng.integers(1, 5))):
            tx, ty = rng.uniform(x0 + 1, x1 - 1), side * (edge + rng.uniform(1.0, green - 1.0))
            trunk_h = rng.uniform(2.0, 3.5)
            out.append(_cylinder(tx, ty, 0.05, trunk_h, rng.uniform(0.15, 0.3), 71))
            rh, rz = rng.uniform(1.2, 2.5), rng.uniform(1.2, 2.2)
            out.append(_ellipsoid((tx, ty, trunk_h + 0.6 * rz), (rh, rh, rz), 70))
        for _ in range(int(rng.integers(0, 5))):
            bx, by = rng.uniform(x0 + 1, x1 - 1), side * (edge + rng.uniform(0.8, green - 0.8))
            out.append(_ellipsoid((bx, by, 0.3), (rng.uniform(0.5, 1.2), rng.uniform(0.5, 1.0), rng.uniform(0.4, 0.8)), 70))
        edge += green
        xa = x0
        while xa < x1 - 3:  # a row of buildings with gaps
            xb = min(x1, xa + rng.uniform(6, 18))
            if rng.random() < 0.8:
                out.append(_box(np.array([xa, side * edge, 0.0]),
                                np.array([xb, side * (edge + rng.uniform(8, 15)), rng.uniform(6, 20)]), 50))
            xa = xb + rng.uniform(0.5, 3.0)
    return out


def sensor_position(seed: int, seq: str, frame: int) -> np.ndarray:
    """World position [3] of the sensor at `frame`: in the right-hand lane, driving along +x."""
    return np.array([STEP * frame, -road_half_width(seed, seq) / 2, SENSOR_HEIGHT])


def frame_solids(seed: int, seq: str, frame: int) -> list[Solid]:
    """Solids within reach of the sensor at `frame`, in the sensor frame (sensor at the origin)."""
    pos = sensor_position(seed, seq, frame)
    first, last = int(np.floor((pos[0] - MAX_RANGE) / SEGMENT)), int(np.floor((pos[0] + MAX_RANGE) / SEGMENT))
    solids = [solid.shifted(*(-pos)) for s in range(first, last + 1) for solid in segment_solids(seed, seq, s)]
    return [s for s in solids if _xy_distance(s) < MAX_RANGE]


def _xy_distance(solid: Solid) -> float:
    """Horizontal distance from the sensor to the solid's bounding box."""
    gap = np.maximum(np.maximum(np.asarray(solid.xy_lo), -np.asarray(solid.xy_hi)), 0.0)
    return float(np.hypot(*gap))


def ray_directions(azimuth_steps: int) -> np.ndarray:
    """Unit directions [64, azimuth_steps, 3], beams from +2 deg down, azimuth from -pi."""
    el = np.radians(ELEVATIONS_DEG)[:, None]
    az = -np.pi + (np.arange(azimuth_steps) + 0.5) * (2 * np.pi / azimuth_steps)
    return np.stack(np.broadcast_arrays(np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)), axis=-1)


def _columns(solid: Solid, azimuth_steps: int) -> np.ndarray:
    """Azimuth columns whose rays can reach the solid's bounding box."""
    lo, hi = np.asarray(solid.xy_lo), np.asarray(solid.xy_hi)
    if np.all(lo <= 0) and np.all(hi >= 0):
        return np.arange(azimuth_steps)
    corners = np.array([[lo[0], lo[1]], [lo[0], hi[1]], [hi[0], lo[1]], [hi[0], hi[1]]])
    mid = np.arctan2(*((lo + hi) / 2)[::-1])
    delta = np.angle(np.exp(1j * (np.arctan2(corners[:, 1], corners[:, 0]) - mid)))
    step = 2 * np.pi / azimuth_steps
    j0 = int(np.floor((mid + delta.min() + np.pi) / step)) - 1
    j1 = int(np.ceil((mid + delta.max() + np.pi) / step)) + 1
    return np.arange(j0, j1 + 1) % azimuth_steps


def sweep(solids: list[Solid], rng: np.random.Generator, azimuth_steps: int = 2000):
    """Cast all rays; returns (points float32 [P, 4] x, y, z, remission; labels uint32 [P])."""
    dirs = ray_directions(azimuth_steps)
    beams = dirs.shape[0]
    flat = dirs.reshape(-1, 3)
    ray_ids = np.arange(flat.shape[0]).reshape(beams, azimuth_steps)
    best = np.full(flat.shape[0], np.inf)
    owner = np.full(flat.shape[0], -1)
    for k, solid in enumerate(solids):
        rays = ray_ids[:, _columns(solid, azimuth_steps)].ravel()
        t = getattr(raycast, solid.shape)(flat[rays], **solid.params)
        closer = t < best[rays]
        best[rays[closer]] = t[closer]
        owner[rays[closer]] = k
    hit = np.flatnonzero((best < MAX_RANGE) & (rng.random(len(best)) >= DROPOUT))
    rng_m = best[hit] + rng.normal(0.0, RANGE_NOISE, len(hit))
    semantic = np.array([s.label for s in solids], np.uint32)[owner[hit]]
    instance = np.array([s.instance for s in solids], np.uint32)[owner[hit]]
    outlier = rng.random(len(hit)) < OUTLIERS
    rng_m[outlier] *= rng.uniform(0.2, 0.9, int(outlier.sum()))
    semantic[outlier], instance[outlier] = 1, 0
    xyz = flat[hit] * rng_m[:, None]
    lut = np.full(260, 0.3)
    lut[list(REMISSION)] = list(REMISSION.values())
    remission = lut[semantic] * (1.0 - 0.3 * rng_m / MAX_RANGE) + rng.normal(0.0, 0.04, len(hit))
    points = np.concatenate([xyz, np.clip(remission, 0.0, 0.99)[:, None]], axis=1).astype(np.float32)
    return points, semantic | (instance << np.uint32(16))


def make_frame(seed: int, seq: str, frame: int, azimuth_steps: int = 2000):
    """(points float32 [P, 4], labels uint32 [P]) of `frame` in sequence `seq`.

    Road returns on the dashed centre line become lane-marking (60) with a high remission.
    """
    rng = scene_rng(seed, "semantickitti", int(seq), 2, frame)
    points, labels = sweep(frame_solids(seed, seq, frame), rng, azimuth_steps)
    world_x = points[:, 0] + STEP * frame
    world_y = points[:, 1] + sensor_position(seed, seq, frame)[1]
    marking = ((labels & 0xFFFF) == 40) & (np.abs(world_y) < 0.08) & (np.mod(world_x, 6.0) < 3.0)
    points[marking, 3] = LANE_MARKING_REMISSION
    labels[marking] = LANE_MARKING
    return points, labels


def frame_of(index: int) -> tuple[str, int]:
    """(sequence, frame number) of generator scene `index`."""
    split = split_of(index)
    return SEQUENCE_OF_SPLIT[split], sum(split_of(j) == split for j in range(index))


# velodyne -> camera-0 axes (x forward, y left, z up -> x right, y down, z forward); no offset here
VELO_TO_CAM = np.array([[0.0, -1.0, 0.0, 0.0], [0.0, 0.0, -1.0, 0.0], [1.0, 0.0, 0.0, 0.0]])
_CAMERA = np.array([[718.856, 0.0, 607.1928], [0.0, 718.856, 185.2157], [0.0, 0.0, 1.0]])
_BASELINE = 0.54  # metres between the stereo pairs


def _row(values) -> str:
    return " ".join(f"{v:.12e}" for v in np.ravel(values))


def calib_text() -> str:
    """calib.txt: projection matrices P0..P3 (3x4) and Tr (velodyne -> camera 0), one row each."""
    lines = []
    for k in range(4):
        proj = np.concatenate([_CAMERA, np.zeros((3, 1))], axis=1)
        if k % 2:  # P1, P3: right cameras of the stereo pairs
            proj[0, 3] = -_CAMERA[0, 0] * _BASELINE
        lines.append(f"P{k}: {_row(proj)}")
    return "\n".join(lines + [f"Tr: {_row(VELO_TO_CAM)}"]) + "\n"


def poses_text(num_frames: int) -> str:
    """poses.txt: camera-0 pose of each frame in the first frame's camera-0 coordinates (3x4 rows)."""
    rows = []
    for frame in range(num_frames):
        pose = np.eye(4)[:3]
        pose[:, 3] = VELO_TO_CAM[:, :3] @ np.array([STEP * frame, 0.0, 0.0])  # straight ahead, no turn
        rows.append(_row(pose))
    return "".join(f"{r}\n" for r in rows)


def generate(out_dir, num_scenes: int, seed: int = 0, azimuth_steps: int = 2000) -> Path:
    """Write `num_scenes` frames plus calib.txt, poses.txt, times.txt per sequence; only missing
    frame files are written (the small text files are rewritten when their content changes)."""
    if azimuth_steps < 16:
        raise ValueError(f"azimuth_steps must be >= 16, got {azimuth_steps}")
    out = Path(out_dir)
    frames = {}
    for index in range(num_scenes):
        seq, frame = frame_of(index)
        frames[seq] = frame + 1
        folder = out / "sequences" / seq
        bin_path, label_path = folder / "velodyne" / f"{frame:06d}.bin", folder / "labels" / f"{frame:06d}.label"
        test = split_of(index) == "test"
        if bin_path.is_file() and (test or label_path.is_file()):
            continue
        points, labels = make_frame(seed, seq, frame, azimuth_steps)
        if not test and not label_path.is_file():
            atomic_write(label_path, lambda tmp: labels.astype("<u4").tofile(tmp))
        if not bin_path.is_file():
            atomic_write(bin_path, lambda tmp: points.astype("<f4").tofile(tmp))
    for seq, count in frames.items():
        folder = out / "sequences" / seq
        atomic_write_text(folder / "calib.txt", calib_text())
        atomic_write_text(folder / "poses.txt", poses_text(count))
        atomic_write_text(folder / "times.txt", "".join(f"{0.1 * f:.6e}\n" for f in range(count)))
    return out
