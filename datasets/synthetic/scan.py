"""Virtual RGB-D scan of a room: turns pieces (surfaces + solids) into coloured points.

Mimics what a reconstructed indoor scan looks like: hidden faces are absent (points inside another
object's solid are dropped), density is uneven (higher near a virtual camera path), large surfaces
have holes, positions carry sensor noise and colours vary per instance and per point.
"""
from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

from .primitives import Rect

_STRUCTURE = ("wall", "floor", "ceiling")


@dataclass
class RoomScan:
    """xyz float32 [P, 3] metres, rgb uint8 [P, 3], piece int64 [P] (index into `kinds`)."""

    xyz: np.ndarray
    rgb: np.ndarray
    piece: np.ndarray
    kinds: list


def _on_boundary(surface, size) -> bool:
    """True for a flat face lying in a room boundary plane (the back of a cabinet, a door's back)."""
    if not isinstance(surface, Rect):
        return False
    o, u, v = (np.asarray(a, float) for a in (surface.origin, surface.u, surface.v))
    for axis, planes in ((0, (0.0, size[0])), (1, (0.0, size[1])), (2, (0.0,))):
        if abs(u[axis]) < 1e-9 and abs(v[axis]) < 1e-9 and min(abs(o[axis] - p) for p in planes) < 1e-6:
            return True
    return False


def _camera_path(rng, lx, ly, spacing=0.2) -> np.ndarray:
    """Closed loop [M, 3] about 1 m inside the walls at eye height, with a random wobble."""
    cx, cy = lx / 2, ly / 2
    rx, ry = max(lx / 2 - 1.0, 0.3), max(ly / 2 - 1.0, 0.3)
    m = int(2 * np.pi * max(rx, ry) / spacing) + 8
    phi = np.linspace(0, 2 * np.pi, m, endpoint=False)
    wobble = 1.0 + 0.15 * np.sin(rng.integers(2, 5) * phi + rng.uniform(0, 2 * np.pi))
    return np.stack([cx + rx * wobble * np.cos(phi), cy + ry * wobble * np.sin(phi),
                     np.full(m, rng.uniform(1.3, 1.6))], axis=1)


def _sample_surfaces(rng, pieces, size, density):
    """Poisson-many uniform points per surface: xyz [N, 3], normals [N, 3], piece id [N],
    solid id [N] (global index into the concatenated solids, -1 for none), and those solids."""
    surfaces, solids = [], []
    for pi, piece in enumerate(pieces):
        base = len(solids)
        solids += piece.solids
        for surface, solid in piece.surfaces:
            if piece.kind in _STRUCTURE or not _on_boundary(surface, size):
                surfaces.append((surface, pi, base + solid if solid >= 0 else -1))
    counts = rng.poisson(np.array([s.area for s, _, _ in surfaces]) * density)
    xyz, normal, piece_id, solid_id = [], [], [], []
    for (surface, pi, si), n in zip(surfaces, counts):
        p, nrm = surface.sample(rng, int(n))
        xyz.append(p)
        normal.append(nrm)
        piece_id.append(np.full(int(n), pi))
        solid_id.append(np.full(int(n), si))
    return (np.concatenate(xyz), np.concatenate(normal), np.concatenate(piece_id), np.concatenate(solid_id),
            solids)


def _visible(xyz, solid_id, cuts, solids, eps=0.005) -> np.ndarray:
    """Mask [N]: False where a point lies inside a solid other than its own (a hidden face)."""
    keep = np.ones(len(xyz), bool)
    for si, (lo, hi) in enumerate(solids):
        inside = np.all((xyz > lo + eps) & (xyz < hi - eps), axis=1)
        keep &= ~(inside & (solid_id != si) & ~cuts)
    return keep


def _colours(rng, pieces, colours, piece_id, normal) -> np.ndarray:
    """uint8 [N, 3]: base colour per kind, +-10 per instance, shading by normal, 6-level noise."""
    base = np.array([colours[p.kind] for p in pieces], float)
    base += rng.uniform(-10, 10, base.shape)
    light = np.array([0.3, 0.2, 0.93])
    shade = 0.85 + 0.15 * np.abs(normal @ (light / np.linalg.norm(light)))
    rgb = base[piece_id] * shade[:, None] + rng.normal(0.0, 6.0, (len(piece_id), 3))
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def scan_room(rng: np.random.Generator, pieces: list, size: tuple, num_points: int, colours: dict,
              oversample: float = 3.0, noise: float = 0.005, holes: tuple = (2, 6)) -> RoomScan:
    """Sample about `num_points` points (exactly that many when enough survive the culling).

    size: (lx, ly, h) metres; colours: kind -> base RGB; noise: position std in metres;
    holes: (min, max) count of holes (radius 0.2-0.5 m) cut into walls/floors/ceilings.
    """
    areas = sum(s.area for p in pieces for s, _ in p.surfaces)
    xyz, normal, piece_id, solid_id, solids = _sample_surfaces(rng, pieces, size, oversample * num_points / areas)
    keep = _visible(xyz, solid_id, np.array([p.cuts for p in pieces])[piece_id], solids)
    # density falls off with distance from the camera path (Gaussian, 1.5 m), to a floor of 25 %
    dist = cKDTree(_camera_path(rng, size[0], size[1])).query(xyz)[0]
    keep &= rng.random(len(xyz)) < 0.25 + 0.75 * np.exp(-0.5 * (dist / 1.5) ** 2)
    structural = np.array([p.kind in _STRUCTURE for p in pieces])[piece_id]
    for centre in xyz[rng.choice(np.flatnonzero(keep & structural), int(rng.integers(holes[0], holes[1] + 1)))]:
        keep &= ~(structural & (((xyz - centre) ** 2).sum(1) < rng.uniform(0.2, 0.5) ** 2))

    idx = np.flatnonzero(keep)
    if len(idx) > num_points:
        idx = np.sort(rng.choice(idx, num_points, replace=False))
    xyz = xyz[idx] + rng.normal(0.0, noise, (len(idx), 3))
    rgb = _colours(rng, pieces, colours, piece_id[idx], normal[idx])
    return RoomScan(xyz.astype(np.float32), rgb, piece_id[idx].astype(np.int64), [p.kind for p in pieces])
