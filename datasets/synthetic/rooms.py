"""Indoor rooms shared by the ScanNet and S3DIS generators: structure, furniture recipes, materials.

`studio_room` is a one-room flat holding every ScanNet benchmark class in a sensible place (bed and
sofa on walls, a table with chairs in the middle, a kitchen counter with a sink, a bathroom corner).
`s3dis_room` builds the S3DIS room types (office, conference room, lounge, hallway) with ceiling,
beams, columns and boards. Both return (pieces, (lx, ly, h)) with the room in [0, lx] x [0, ly] x [0, h].
"""
import numpy as np

from . import furniture as fu
from .layout import Layout, chair_at_desk, chair_frames
from .primitives import Rect

# Base colour (RGB) per kind: distinct per material so colour is informative, with noise added later.
COLOURS = {
    "wall": (205, 200, 190), "floor": (135, 95, 55), "ceiling": (232, 232, 228),
    "cabinet": (185, 55, 45), "bed": (60, 100, 200), "chair": (45, 165, 65), "sofa": (140, 55, 150),
    "table": (225, 180, 40), "door": (75, 45, 25), "window": (150, 215, 235), "bookshelf": (25, 95, 95),
    "picture": (235, 105, 170), "counter": (85, 85, 95), "desk": (205, 115, 40), "curtain": (160, 25, 85),
    "refrigerator": (120, 140, 170), "shower_curtain": (110, 215, 160), "toilet": (245, 245, 235),
    "sink": (185, 125, 245), "bathtub": (240, 225, 110), "otherfurniture": (95, 130, 30),
    "misc": (128, 128, 128), "beam": (190, 180, 160), "column": (170, 160, 150), "board": (250, 250, 245),
    "stairs": (110, 110, 110),
}


def structure(lx: float, ly: float, h: float, ceiling: bool) -> list:
    """Floor, four walls (one piece each, inner faces) and optionally the ceiling."""
    floor = fu.Piece("floor")
    floor.add(Rect((0, 0, 0), (lx, 0, 0), (0, ly, 0)))
    pieces = [floor]
    for origin, along in (((0, 0, 0), (lx, 0, 0)), ((lx, 0, 0), (0, ly, 0)),
                          ((lx, ly, 0), (-lx, 0, 0)), ((0, ly, 0), (0, -ly, 0))):
        wall = fu.Piece("wall")
        wall.add(Rect(origin, (0, 0, h), along))
        pieces.append(wall)
    if ceiling:
        top = fu.Piece("ceiling")
        top.add(Rect((0, 0, h), (0, ly, 0), (lx, 0, 0)))
        pieces.append(top)
    return pieces


class _Builder:
    """Places pieces through a Layout; `required` failures make the whole attempt fail."""

    def __init__(self, rng, lx, ly, h):
        self.rng, self.layout, self.pieces, self.ok = rng, Layout(rng, lx, ly, h), [], True

    def u(self, lo, hi):
        return self.rng.uniform(lo, hi)

    def keep(self, frame, build, *args, required=True):
        if frame is None:
            self.ok = self.ok and not required
            return None
        self.pieces.append(build(frame, *args))
        return frame

    def wall_thing(self, build, width, z0, z1, depth=0.05, front=0.0, required=True, **where):
        f = self.layout.on_wall(width, z0, z1, depth=depth, front=front, **where)
        return self.keep(f, build, z0, z1 - z0, required=required)

    def door(self, required=True):
        self.wall_thing(fu.wall_panel("door", 0.04), self.u(0.8, 0.95), 0.0, 2.05, front=0.9, required=required)

    def windows(self, count, curtains: bool):
        for _ in range(count):
            width, z0, z1 = self.u(0.9, 1.6), self.u(0.85, 1.0), self.u(2.0, 2.25)
            f = self.layout.on_wall(width, z0, z1, depth=0.03, front=0.1)
            if self.keep(f, fu.window, z0, z1 - z0) is None or not curtains:
                continue
            wall, start = self.layout.wall_position(f)
            cw = self.u(0.45, 0.7)
            for u in (start - cw - 0.1, start + width + 0.1):
                cf = self.layout.on_wall(cw, 0.05, z1 + 0.1, depth=0.16, wall=wall, u=u)
                if cf is not None:
                    self.pieces.append(fu.curtain(cf, z1 + 0.05, self.rng))

    def pictures(self, count, kind="picture", widths=(0.6, 1.1), required=True):
        for k in range(count):
            z0 = self.u(1.1, 1.4)
            self.wall_thing(fu.wall_panel(kind, 0.04), self.u(*widths), z0, z0 + self.u(0.5, 0.8),
                            required=required and k == 0)

    def table_with_chairs(self, n_chairs, width=(1.2, 1.7), depth=(0.8, 1.0), misc=True):
        f = self.layout.free_standing(self.u(*width), self.u(*depth), 0.76, surround=0.55)
        if self.keep(f, fu.table, 0.76) is None:
            return
        for cf in chair_frames(f, n_chairs, self.rng):
            self.pieces.append(fu.chair(cf, 0.45))
        if misc:  # a small unknown object on the table top (a raw id outside NYU40 in ScanNet)
            a, d, s = self.u(0.2, f.width - 0.4), self.u(0.2, f.depth - 0.4), self.u(0.12, 0.2)
            self.pieces.append(_raised_block("misc", f, a, d, s, 0.76))

    def desk_with_chair(self, required=True):
        f = self.layout.against_wall(self.u(1.2, 1.6), self.u(0.6, 0.75), 0.75, front=1.0)
        if self.keep(f, fu.desk, 0.75, required=required) is not None:
            self.pieces.append(fu.chair(chair_at_desk(f), 0.45))

    def against_wall(self, build, width, depth, height, front=0.0, required=True):
        f = self.layout.against_wall(width, depth, height, front=front)
        return self.keep(f, build, height, required=required)

    def stools(self, count, required=True):
        for k in range(count):
            r = self.u(0.22, 0.32)
            f = self.layout.free_standing(2 * r, 2 * r, 0.45)
            self.keep(f, fu.stool, self.u(0.4, 0.5), required=required and k == 0)


def _raised_block(kind, f: fu.Frame, a, d, size, z0) -> fu.Piece:
    """A box of edge `size` standing on a surface at height z0, at (a, d) in frame f."""
    p = fu.Piece(kind)
    p.add_box(*f.box(a, a + size, d, d + size, z0, z0 + size))
    return p


def _room(rng, dims, place, ceiling: bool, attempts: int = 30):
    """Draw room dimensions and run `place(builder)` until every required object fits."""
    for _ in range(attempts):
        lx, ly, h = (rng.uniform(lo, hi) for lo, hi in dims)
        b = _Builder(rng, lx, ly, h)
        place(b)
        if b.ok:
            return structure(lx, ly, h, ceiling) + b.pieces, (lx, ly, h)
    raise RuntimeError(f"could not lay out a room in {attempts} attempts for dims {dims}")


def _studio(b: _Builder):
    b.door()
    f = b.against_wall(fu.bathtub, b.u(1.55, 1.7), 0.75, 0.55, front=0.15)
    if f is not None:
        b.pieces.append(fu.shower_curtain(f, b.rng))
    b.against_wall(fu.toilet, 0.4, 0.7, 0.42, front=0.4)
    f = b.against_wall(fu.counter, b.u(1.6, 2.4), 0.62, 0.9, front=0.6)
    if f is not None:
        b.pieces.append(fu.sink(f, b.u(0.1, f.width - 0.7), 0.9))
    b.against_wall(fu.solid_block("refrigerator"), b.u(0.65, 0.8), 0.7, b.u(1.7, 1.9), front=0.6)
    b.against_wall(fu.bed, b.u(1.4, 1.8), b.u(2.0, 2.1), b.u(0.2, 0.28), front=0.3)
    b.against_wall(fu.sofa, b.u(1.8, 2.3), b.u(0.85, 0.95), 0.45, front=0.4)
    b.desk_with_chair()
    b.against_wall(fu.bookshelf, b.u(0.8, 1.2), b.u(0.3, 0.38), b.u(1.6, 2.0), front=0.4)
    for k in range(int(b.rng.integers(1, 3))):
        b.against_wall(fu.solid_block("cabinet"), b.u(0.6, 1.1), b.u(0.45, 0.6), b.u(0.8, 1.0),
                       front=0.4, required=k == 0)
    b.windows(int(b.rng.integers(1, 3)), curtains=True)
    if not any(p.kind == "curtain" for p in b.pieces):
        b.ok = False
    b.pictures(int(b.rng.integers(1, 4)))
    b.table_with_chairs(int(b.rng.integers(2, 5)))
    b.stools(int(b.rng.integers(1, 3)))


def studio_room(rng: np.random.Generator, ceiling: bool = False):
    """A studio flat of 6-8 x 5-6.5 m holding all 20 ScanNet benchmark classes."""
    return _room(rng, ((6.0, 8.0), (5.0, 6.5), (2.5, 3.0)), _studio, ceiling)


def _s3dis_common(b: _Builder, room_type: str):
    lx, ly, h = b.layout.lx, b.layout.ly, b.layout.h
    for _ in range(int(b.rng.integers(0, 3))):  # beams across the ceiling, full span
        x = b.u(0.5, lx - 0.8)
        beam = fu.Piece("beam")
        beam.add_box((x, 0.0, h - 0.45), (x + 0.3, ly, h), skip=("top",))
        b.pieces.append(beam)
    for _ in range(int(b.rng.integers(0, 3))):
        side = b.u(0.35, 0.6)
        b.against_wall(fu.solid_block("column"), side, side, h, required=False)
    b.door()
    if room_type == "hallway":
        for _ in range(int(b.rng.integers(1, 3))):
            b.door(required=False)
        if b.rng.random() < 0.3:
            b.against_wall(fu.stairs, b.u(1.0, 1.4), b.u(1.2, 1.6), 0.9, required=False)
        b.stools(int(b.rng.integers(0, 2)), required=False)
        return
    b.windows(int(b.rng.integers(1, 3)), curtains=False)
    b.pictures(1, kind="board", widths=(1.5, 2.5))
    if room_type == "office":
        for _ in range(int(b.rng.integers(2, 4))):
            b.desk_with_chair(required=False)
        b.against_wall(fu.bookshelf, b.u(0.8, 1.2), 0.35, b.u(1.6, 2.0), front=0.4, required=False)
        b.against_wall(fu.solid_block("cabinet"), b.u(0.6, 1.0), 0.5, b.u(0.8, 1.2), required=False)
    elif room_type == "conferenceRoom":
        b.table_with_chairs(int(b.rng.integers(6, 11)), width=(2.4, 3.4), depth=(1.0, 1.3), misc=False)
    else:  # lounge
        b.against_wall(fu.sofa, b.u(1.8, 2.3), 0.9, 0.45, front=0.4)
        b.table_with_chairs(int(b.rng.integers(2, 4)), misc=False)
        b.against_wall(fu.bookshelf, b.u(0.8, 1.2), 0.35, b.u(1.6, 2.0), front=0.4, required=False)
    b.pictures(int(b.rng.integers(0, 3)), required=False)
    b.stools(int(b.rng.integers(1, 3)), required=False)


S3DIS_ROOM_TYPES = ("office", "conferenceRoom", "lounge", "hallway")
_S3DIS_DIMS = {"office": ((4.5, 7.0), (4.0, 6.0), (2.9, 3.3)),
               "conferenceRoom": ((6.0, 8.5), (5.0, 7.0), (2.9, 3.3)),
               "lounge": ((5.0, 8.0), (4.5, 6.5), (2.9, 3.3)),
               "hallway": ((8.0, 14.0), (1.8, 2.6), (2.9, 3.3))}


def s3dis_room(rng: np.random.Generator, room_type: str):
    """An S3DIS-style room of `room_type` (one of S3DIS_ROOM_TYPES), with ceiling."""
    return _room(rng, _S3DIS_DIMS[room_type], lambda b: _s3dis_common(b, room_type), ceiling=True)
