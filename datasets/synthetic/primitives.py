"""Surface samplers for synthetic indoor scenes: rectangles, boxes, cylinders, discs, wavy sheets.

Every surface has an `area` (m^2) and `sample(rng, n) -> (xyz [n, 3] float64 metres, normals [n, 3])`
drawing points uniformly by area. Normals are unit vectors, used only for shading colours.
"""
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Rect:
    """Parallelogram origin + a*u + b*v, a, b in [0, 1]; u, v are edge vectors in metres."""

    origin: tuple
    u: tuple
    v: tuple

    @property
    def area(self) -> float:
        return float(np.linalg.norm(np.cross(self.u, self.v)))

    def sample(self, rng: np.random.Generator, n: int):
        ab = rng.random((n, 2))
        xyz = np.asarray(self.origin) + ab[:, :1] * np.asarray(self.u) + ab[:, 1:] * np.asarray(self.v)
        normal = np.cross(self.u, self.v)
        normal = normal / np.linalg.norm(normal)
        return xyz, np.broadcast_to(normal, (n, 3))


@dataclass(frozen=True)
class CylinderSide:
    """Side of a vertical cylinder: axis at (cx, cy), from z0 to z1, radius r (metres)."""

    cx: float
    cy: float
    z0: float
    z1: float
    r: float

    @property
    def area(self) -> float:
        return 2.0 * np.pi * self.r * (self.z1 - self.z0)

    def sample(self, rng: np.random.Generator, n: int):
        phi = rng.random(n) * 2.0 * np.pi
        z = self.z0 + rng.random(n) * (self.z1 - self.z0)
        normal = np.stack([np.cos(phi), np.sin(phi), np.zeros(n)], axis=1)
        xyz = np.stack([self.cx + self.r * normal[:, 0], self.cy + self.r * normal[:, 1], z], axis=1)
        return xyz, normal


@dataclass(frozen=True)
class Disc:
    """Horizontal disc at height z, centre (cx, cy), radius r, normal +z."""

    cx: float
    cy: float
    z: float
    r: float

    @property
    def area(self) -> float:
        return np.pi * self.r ** 2

    def sample(self, rng: np.random.Generator, n: int):
        rad = self.r * np.sqrt(rng.random(n))  # sqrt: uniform by area
        phi = rng.random(n) * 2.0 * np.pi
        xyz = np.stack([self.cx + rad * np.cos(phi), self.cy + rad * np.sin(phi), np.full(n, self.z)], axis=1)
        return xyz, np.broadcast_to(np.array([0.0, 0.0, 1.0]), (n, 3))


@dataclass(frozen=True)
class WavySheet:
    """Vertical pleated sheet (a curtain): origin + a*u + sin-offset along `normal` + z in [0, height].

    `u` is the horizontal extent (metres), `normal` a horizontal unit vector, the pleats have
    `amplitude` and `period` in metres.
    """

    origin: tuple
    u: tuple
    normal: tuple
    height: float
    amplitude: float
    period: float

    @property
    def area(self) -> float:
        length = float(np.linalg.norm(self.u))
        slope = 2.0 * np.pi * self.amplitude / self.period
        return length * self.height * float(np.sqrt(1.0 + 0.5 * slope ** 2))  # mean arc-length factor

    def sample(self, rng: np.random.Generator, n: int):
        u = np.asarray(self.u, dtype=float)
        nrm = np.asarray(self.normal, dtype=float)
        length = np.linalg.norm(u)
        a = rng.random(n) * length
        phase = 2.0 * np.pi * a / self.period
        xyz = (np.asarray(self.origin) + a[:, None] * (u / length)
               + (self.amplitude * np.sin(phase))[:, None] * nrm)
        xyz[:, 2] += rng.random(n) * self.height
        slope = 2.0 * np.pi * self.amplitude / self.period * np.cos(phase)
        normal = nrm[None, :] - slope[:, None] * (u / length)[None, :]
        return xyz, normal / np.linalg.norm(normal, axis=1, keepdims=True)


def box_faces(lo, hi, skip=("bottom",)) -> list:
    """The six faces of the axis-aligned box [lo, hi] as outward Rects, minus those named in `skip`.

    Face names: bottom, top, x0, x1, y0, y1 (x0 is the face at x = lo[0], and so on).
    """
    (x0, y0, z0), (x1, y1, z1) = lo, hi
    dx, dy, dz = x1 - x0, y1 - y0, z1 - z0
    faces = {
        "bottom": Rect((x0, y0, z0), (0, dy, 0), (dx, 0, 0)),
        "top": Rect((x0, y0, z1), (dx, 0, 0), (0, dy, 0)),
        "x0": Rect((x0, y0, z0), (0, 0, dz), (0, dy, 0)),
        "x1": Rect((x1, y0, z0), (0, dy, 0), (0, 0, dz)),
        "y0": Rect((x0, y0, z0), (dx, 0, 0), (0, 0, dz)),
        "y1": Rect((x0, y1, z0), (0, 0, dz), (dx, 0, 0)),
    }
    return [face for name, face in faces.items() if name not in skip]
