"""Analytic ray casting against simple solids, vectorised over rays that start at the origin.

Every function takes unit directions `d` [R, 3] (rays from (0, 0, 0), the sensor) and returns the
distance t [R] in metres to the first hit in front of the sensor, `inf` where the ray misses.
Solids are described in the sensor frame (metres, z up).
"""
import numpy as np

_INF = np.inf


def horizontal_rect(d, z, x0, x1, y0, y1):
    """Rectangle at height z spanning [x0, x1] x [y0, y1] (a flat patch of ground)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        t = z / d[:, 2]
    x, y = t * d[:, 0], t * d[:, 1]
    hit = (t > 0) & (x >= x0) & (x <= x1) & (y >= y0) & (y <= y1)
    return np.where(hit, t, _INF)


def box(d, center, half, yaw=0.0):
    """Box with centre [3], half extents [3], rotated by `yaw` (radians) about the vertical axis."""
    c, s = np.cos(yaw), np.sin(yaw)
    # express rays in the box frame: rotate by -yaw, origin at -center
    dl = np.stack([c * d[:, 0] + s * d[:, 1], -s * d[:, 0] + c * d[:, 1], d[:, 2]], axis=1)
    ol = np.array([-(c * center[0] + s * center[1]), s * center[0] - c * center[1], -center[2]])
    with np.errstate(divide="ignore", invalid="ignore"):
        t1 = (-np.asarray(half) - ol) / dl
        t2 = (np.asarray(half) - ol) / dl
    # a ray parallel to a slab gives nan when its origin lies on the slab plane: count it as outside
    t1, t2 = np.nan_to_num(t1, nan=_INF), np.nan_to_num(t2, nan=-_INF)
    near = np.minimum(t1, t2).max(axis=1)
    far = np.maximum(t1, t2).min(axis=1)
    return np.where((near <= far) & (near > 0), near, _INF)


def ellipsoid(d, center, radii):
    """Axis-aligned ellipsoid with centre [3] and radii [3] (tree crowns, bushes)."""
    ds = d / np.asarray(radii)
    os_ = -np.asarray(center, float) / np.asarray(radii)
    a = (ds ** 2).sum(1)
    b = 2.0 * ds @ os_
    c = os_ @ os_ - 1.0
    disc = b * b - 4 * a * c
    with np.errstate(invalid="ignore"):
        t = (-b - np.sqrt(disc)) / (2 * a)
    return np.where((disc >= 0) & (t > 0), t, _INF)


def vertical_cylinder(d, cx, cy, z0, z1, r):
    """Finite vertical cylinder (side and top cap) with axis at (cx, cy), from z0 to z1."""
    a = d[:, 0] ** 2 + d[:, 1] ** 2
    b = -2.0 * (d[:, 0] * cx + d[:, 1] * cy)
    c = cx * cx + cy * cy - r * r
    disc = b * b - 4 * a * c
    with np.errstate(invalid="ignore", divide="ignore"):
        t_side = (-b - np.sqrt(disc)) / (2 * a)
        t_top = z1 / d[:, 2]
    z = t_side * d[:, 2]
    side = np.where((disc >= 0) & (t_side > 0) & (z >= z0) & (z <= z1), t_side, _INF)
    xt, yt = t_top * d[:, 0] - cx, t_top * d[:, 1] - cy
    top = np.where((t_top > 0) & (xt * xt + yt * yt <= r * r), t_top, _INF)
    return np.minimum(side, top)
