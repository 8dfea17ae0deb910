"""Non-intersecting placement of objects in an axis-aligned room [0, lx] x [0, ly] x [0, h] (metres).

Every placed thing reserves an axis-aligned occupancy box (its footprint plus the free space it
needs in front: a door's swing, the seat zone of a table); a new box is accepted only when it
overlaps no reserved one. Walls are numbered 0: y = 0, 1: x = lx, 2: y = ly, 3: x = 0, and a wall
frame's `n` points into the room.
"""
import numpy as np

from .furniture import Frame

_GAP = 0.05  # minimum clearance between reserved boxes, metres


class Layout:
    def __init__(self, rng: np.random.Generator, lx: float, ly: float, h: float, tries: int = 150):
        self.rng, self.lx, self.ly, self.h, self.tries = rng, lx, ly, h, tries
        self.boxes: list = []

    def wall_length(self, wall: int) -> float:
        return self.lx if wall % 2 == 0 else self.ly

    def wall_frame(self, wall: int, u: float, width: float, depth: float) -> Frame:
        """Frame of a thing whose back is on `wall`, starting `u` metres along it."""
        lx, ly = self.lx, self.ly
        origin, t, n = [((u, 0.0), (1, 0), (0, 1)),
                         ((lx, u), (0, 1), (-1, 0)),
                         ((lx - u, ly), (-1, 0), (0, -1)),
                         ((0.0, ly - u), (0, -1), (1, 0))][wall]
        return Frame(origin, t, n, width, depth)

    def wall_position(self, f: Frame):
        """(wall, u) of a frame made by `wall_frame`."""
        wall = [(0, 1), (-1, 0), (0, -1), (1, 0)].index(tuple(f.n))
        x, y = f.origin
        return wall, [x, y, self.lx - x, self.ly - y][wall]

    def is_free(self, lo, hi) -> bool:
        for blo, bhi in self.boxes:
            if np.all(lo < bhi + _GAP) and np.all(hi > blo - _GAP):
                return False
        return True

    def reserve(self, lo, hi):
        self.boxes.append((np.asarray(lo, float), np.asarray(hi, float)))

    def _try_reserve(self, f: Frame, d1: float, z0: float, z1: float):
        lo, hi = f.box(0, f.width, 0, d1, z0, z1)
        if lo[0] < -1e-6 or lo[1] < -1e-6 or hi[0] > self.lx + 1e-6 or hi[1] > self.ly + 1e-6:
            return None
        if not self.is_free(lo, hi):
            return None
        self.reserve(lo, hi)
        return f

    def against_wall(self, width, depth, height, front=0.0, walls=(0, 1, 2, 3)):
        """Frame of a floor-standing object backed onto a wall, keeping `front` metres free, or None."""
        for _ in range(self.tries):
            wall = int(self.rng.choice(walls))
            span = self.wall_length(wall) - width
            if span <= 0:
                continue
            f = self.wall_frame(wall, self.rng.uniform(0, span), width, depth)
            if self._try_reserve(f, depth + front, 0.0, height):
                return f
        return None

    def on_wall(self, width, z0, z1, depth=0.05, front=0.0, wall=None, u=None):
        """Frame of a thing hung on a wall between heights z0 and z1, or None."""
        for _ in range(1 if u is not None else self.tries):
            w = int(self.rng.integers(4)) if wall is None else wall
            span = self.wall_length(w) - width
            if span <= 0:
                continue
            uu = self.rng.uniform(0, span) if u is None else u
            if not 0 <= uu <= span:
                continue
            f = self.wall_frame(w, uu, width, depth)
            if self._try_reserve(f, depth + front, z0, z1):
                return f
        return None

    def free_standing(self, width, depth, height, surround=0.0, wall_margin=0.4):
        """Frame of an object away from the walls with `surround` metres free on every side, or None."""
        for _ in range(self.tries):
            along_x = self.rng.random() < 0.5
            ex, ey = (width, depth) if along_x else (depth, width)
            m = wall_margin + surround
            if self.lx - ex < 2 * m or self.ly - ey < 2 * m:
                continue
            x0 = self.rng.uniform(m, self.lx - ex - m)
            y0 = self.rng.uniform(m, self.ly - ey - m)
            lo = np.array([x0 - surround, y0 - surround, 0.0])
            hi = np.array([x0 + ex + surround, y0 + ey + surround, height])
            if not self.is_free(lo, hi):
                continue
            self.reserve(lo, hi)
            if along_x:
                return Frame((x0, y0), (1, 0), (0, 1), width, depth)
            return Frame((x0 + ex, y0), (0, 1), (-1, 0), width, depth)
        return None


def chair_frames(table: Frame, count: int, rng: np.random.Generator, size: float = 0.46) -> list:
    """Up to `count` chair frames around `table`, each backed away from it (inside its surround)."""
    slots = []
    per_side = max(1, int(table.width // 0.6))  # chair centres at least 0.6 m apart
    for a in (np.arange(per_side) + 0.5) * table.width / per_side:
        slots.append((a, -1.0))  # behind the table's back edge, facing +n
        slots.append((a, table.depth + 1.0))  # beyond its front edge, facing -n
    order = rng.permutation(len(slots))[:count]
    frames = []
    t, n = np.asarray(table.t, float), np.asarray(table.n, float)
    for k in order:
        a, side = slots[k]
        if side < 0:  # back of the chair at d = -0.5, seat towards the table
            origin = table.xy(a + size / 2, -0.5)
            frames.append(Frame(tuple(origin), tuple(-t), tuple(n), size, size))
        else:
            origin = table.xy(a - size / 2, table.depth + 0.5)
            frames.append(Frame(tuple(origin), tuple(t), tuple(-n), size, size))
    return frames


def chair_at_desk(desk: Frame, size: float = 0.46) -> Frame:
    """Chair in front of a desk (inside the desk's reserved front zone), seat towards the desk."""
    t, n = np.asarray(desk.t, float), np.asarray(desk.n, float)
    origin = desk.xy(desk.width / 2 + size / 2, desk.depth + 0.55)
    return Frame(tuple(origin), tuple(-t), tuple(-n), size, size)
