"""Indoor object builders: each turns a placement frame into a `Piece` (surfaces + solid boxes).

Objects are built in a frame local to their footprint: `a` runs along the object's width (metres from
its left edge), `d` along its depth (metres from its back, the side against a wall or away from a
table), z up from the floor. Kinds are neutral names; each format module maps them to its label ids.
"""
from dataclasses import dataclass, field

import numpy as np

from .primitives import CylinderSide, Disc, Rect, WavySheet, box_faces


@dataclass(frozen=True)
class Frame:
    """Footprint frame: back-left floor corner `origin` (x, y), unit vectors `t` (width) and `n` (depth)."""

    origin: tuple
    t: tuple
    n: tuple
    width: float
    depth: float

    def xy(self, a: float, d: float) -> np.ndarray:
        return np.asarray(self.origin) + a * np.asarray(self.t) + d * np.asarray(self.n)

    def box(self, a0, a1, d0, d1, z0, z1):
        """World AABB (lo [3], hi [3]) of the local box a in [a0, a1], d in [d0, d1], z in [z0, z1]."""
        p, q = self.xy(a0, d0), self.xy(a1, d1)
        return np.r_[np.minimum(p, q), z0], np.r_[np.maximum(p, q), z1]


@dataclass
class Piece:
    """One object instance: `surfaces` is a list of (surface, index into `solids` or -1).

    Points sampled on a surface are later removed where they fall inside any solid other than
    their own (hidden faces: the floor under a bed, the wall behind a picture), unless the piece
    `cuts` into others (a sink basin sunk into a counter).
    """

    kind: str
    surfaces: list = field(default_factory=list)
    solids: list = field(default_factory=list)
    cuts: bool = False

    def add_solid(self, lo, hi) -> int:
        self.solids.append((np.asarray(lo, float), np.asarray(hi, float)))
        return len(self.solids) - 1

    def add_box(self, lo, hi, skip=("bottom",)) -> int:
        idx = self.add_solid(lo, hi)
        self.surfaces += [(face, idx) for face in box_faces(lo, hi, skip)]
        return idx

    def add(self, surface, solid: int = -1):
        self.surfaces.append((surface, solid))


def _legs(piece: Piece, f: Frame, z_top: float, size: float):
    for a in (0.0, f.width - size):
        for d in (0.0, f.depth - size):
            piece.add_box(*f.box(a, a + size, d, d + size, 0.0, z_top))


def bed(f: Frame, h: float) -> Piece:
    p = Piece("bed")
    p.add_box(*f.box(0, f.width, 0.05, f.depth, 0.0, 0.3))
    p.add_box(*f.box(0.03, f.width - 0.03, 0.07, f.depth - 0.03, 0.3, 0.3 + h))
    p.add_box(*f.box(0, f.width, 0, 0.05, 0.0, 1.0))  # headboard
    return p


def sofa(f: Frame, h: float) -> Piece:
    p = Piece("sofa")
    p.add_box(*f.box(0.15, f.width - 0.15, 0.22, f.depth, 0.0, h))
    p.add_box(*f.box(0, f.width, 0, 0.22, 0.0, h + 0.4))
    for a in (0.0, f.width - 0.15):
        p.add_box(*f.box(a, a + 0.15, 0.22, f.depth, 0.0, h + 0.17))
    return p


def chair(f: Frame, h: float) -> Piece:
    p = Piece("chair")
    _legs(p, f, h, 0.04)
    p.add_box(*f.box(0, f.width, 0, f.depth, h, h + 0.05))
    p.add_box(*f.box(0, f.width, 0, 0.05, h + 0.05, h + 0.5))
    return p


def table(f: Frame, h: float) -> Piece:
    p = Piece("table")
    _legs(p, f, h - 0.04, 0.07)
    p.add_box(*f.box(0, f.width, 0, f.depth, h - 0.04, h))
    return p


def desk(f: Frame, h: float) -> Piece:
    p = Piece("desk")
    p.add_box(*f.box(0, f.width, 0, f.depth, h - 0.03, h))
    p.add_box(*f.box(0, 0.42, 0.02, f.depth, 0.0, h - 0.03))  # drawer pedestal
    p.add_box(*f.box(f.width - 0.03, f.width, 0, f.depth, 0.0, h - 0.03))
    p.add_box(*f.box(0.42, f.width - 0.03, 0, 0.02, 0.3, h - 0.03))  # modesty panel
    return p


def solid_block(kind: str):
    """Builder for plain boxes (cabinet, refrigerator, column, misc clutter)."""
    def build(f: Frame, h: float) -> Piece:
        p = Piece(kind)
        p.add_box(*f.box(0, f.width, 0, f.depth, 0.0, h))
        return p
    return build


def bookshelf(f: Frame, h: float) -> Piece:
    p = Piece("bookshelf")
    w, d, t = f.width, f.depth, 0.025
    p.add_box(*f.box(0, t, 0, d, 0.0, h))
    p.add_box(*f.box(w - t, w, 0, d, 0.0, h))
    p.add_box(*f.box(t, w - t, 0, t, 0.0, h))
    for z in np.linspace(0.05, h - t, 5):
        p.add_box(*f.box(t, w - t, t, d, z, z + t))
    return p


def counter(f: Frame, h: float) -> Piece:
    p = Piece("counter")
    p.add_box(*f.box(0, f.width, 0, f.depth - 0.04, 0.0, h - 0.04))
    p.add_box(*f.box(0, f.width, 0, f.depth, h - 0.04, h))
    return p


def sink(f: Frame, a0: float, h: float) -> Piece:
    """Basin cut into the counter top of frame `f`, from a0 to a0 + 0.6 along the counter."""
    p = Piece("sink", cuts=True)
    a1, d0, d1, z0 = a0 + 0.6, 0.1, 0.55, h - 0.2
    lo, hi = f.box(a0, a1, d0, d1, z0, h + 0.005)
    solid = p.add_solid(lo, hi)
    dx, dy = hi[0] - lo[0], hi[1] - lo[1]
    dz = h - z0
    for surface in (Rect((lo[0], lo[1], z0), (dx, 0, 0), (0, dy, 0)),  # inner walls face inwards
                    Rect((lo[0], lo[1], z0), (0, dy, 0), (0, 0, dz)),
                    Rect((hi[0], lo[1], z0), (0, 0, dz), (0, dy, 0)),
                    Rect((lo[0], lo[1], z0), (0, 0, dz), (dx, 0, 0)),
                    Rect((lo[0], hi[1], z0), (dx, 0, 0), (0, 0, dz))):
        p.add(surface, solid)
    tap = f.xy((a0 + a1) / 2, 0.06)
    p.add(CylinderSide(tap[0], tap[1], h, h + 0.25, 0.02), solid)
    return p


def toilet(f: Frame, h: float) -> Piece:
    p = Piece("toilet")
    p.add_box(*f.box(0.02, f.width - 0.02, 0, 0.2, h, h + 0.38))  # tank
    p.add_box(*f.box(0.12, f.width - 0.12, 0.2, 0.5, 0.0, h - 0.12))  # pedestal
    c = f.xy(f.width / 2, 0.45)
    r = f.width / 2 - 0.01
    solid = p.add_solid(np.r_[c - r, h - 0.14], np.r_[c + r, h])
    p.add(CylinderSide(c[0], c[1], h - 0.14, h, r), solid)
    p.add(Disc(c[0], c[1], h, r), solid)
    return p


def bathtub(f: Frame, h: float) -> Piece:
    p = Piece("bathtub")
    w, d, t = f.width, f.depth, 0.08
    p.add_box(*f.box(0, w, 0, d, 0.0, 0.1))
    for box in ((0, w, 0, t), (0, w, d - t, d), (0, t, t, d - t), (w - t, w, t, d - t)):
        p.add_box(*f.box(*box, 0.0, h))
    return p


def shower_curtain(f: Frame, rng: np.random.Generator) -> Piece:
    """Pleated sheet hanging along the open (front) side of the bathtub in frame `f`."""
    p = Piece("shower_curtain")
    start = f.xy(0.02, f.depth + 0.04)
    u = np.r_[np.asarray(f.t) * (f.width - 0.04), 0.0]
    p.add(WavySheet((start[0], start[1], 0.45), tuple(u), tuple(np.r_[f.n, 0.0]), rng.uniform(1.4, 1.6),
                    0.035, rng.uniform(0.12, 0.18)))
    return p


def curtain(f: Frame, h: float, rng: np.random.Generator) -> Piece:
    """Pleated sheet 8-12 cm in front of a wall; the solid hides the wall behind it."""
    p = Piece("curtain")
    solid = p.add_solid(*f.box(0, f.width, -0.02, 0.16, 0.05, 0.05 + h))
    start = f.xy(0, 0.1)
    u = np.r_[np.asarray(f.t) * f.width, 0.0]
    p.add(WavySheet((start[0], start[1], 0.05), tuple(u), tuple(np.r_[f.n, 0.0]), h, 0.04,
                    rng.uniform(0.15, 0.22)), solid)
    return p


def wall_panel(kind: str, thickness: float):
    """Builder for flat things on a wall (door, picture, board): a thin box from z0 to z0 + h."""
    def build(f: Frame, z0: float, h: float) -> Piece:
        p = Piece(kind)
        p.add_box(*f.box(0, f.width, 0, thickness, z0, z0 + h), skip=())
        return p
    return build


def window(f: Frame, z0: float, h: float) -> Piece:
    """Glass pane recessed 6 cm into the wall plus a frame; the solid cuts the opening in the wall."""
    p = Piece("window")
    solid = p.add_solid(*f.box(0, f.width, -0.1, 0.03, z0, z0 + h))
    lo, hi = f.box(0.04, f.width - 0.04, -0.06, -0.06, z0 + 0.04, z0 + h - 0.04)
    p.add(Rect(tuple(lo), tuple(np.r_[(hi - lo)[:2], 0.0]), (0, 0, hi[2] - lo[2])), solid)
    bar = 0.05
    for a0, a1, zz0, zz1 in ((0, f.width, z0, z0 + bar), (0, f.width, z0 + h - bar, z0 + h),
                             (0, bar, z0, z0 + h), (f.width - bar, f.width, z0, z0 + h),
                             (f.width / 2 - bar / 2, f.width / 2 + bar / 2, z0, z0 + h)):
        for face in box_faces(*f.box(a0, a1, -0.06, 0.02, zz0, zz1), skip=()):
            p.add(face, solid)
    return p


def stool(f: Frame, h: float) -> Piece:
    """Round upholstered stool (the 'other furniture' of the rooms)."""
    p = Piece("otherfurniture")
    c = f.xy(f.width / 2, f.depth / 2)
    r = f.width / 2
    solid = p.add_solid(np.r_[c - r, 0.0], np.r_[c + r, h])
    p.add(CylinderSide(c[0], c[1], 0.0, h, r), solid)
    p.add(Disc(c[0], c[1], h, r), solid)
    return p


def stairs(f: Frame, h: float) -> Piece:
    p = Piece("stairs")
    steps = 5
    run = f.depth / steps
    for k in range(steps):
        p.add_box(*f.box(0, f.width, k * run, f.depth, 0.0, h * (k + 1) / steps))
    return p
