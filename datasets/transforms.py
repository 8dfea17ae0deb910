"""Random augmentations of one scene; every draw comes from the generator passed in.

Geometry acts on xyz [P, 3] float32 metres; colour augmentations act on RGB [M, 3] float32 in 0..255.
"""
import numpy as np

from lib.config.schema_data import AugmentConfig


def column_min_max(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-column min and max of a [P, C] array (column by column: an axis-0 reduction is far slower)."""
    return np.array([a[:, i].min() for i in range(a.shape[1])]), np.array([a[:, i].max() for i in range(a.shape[1])])


def apply_affine(xyz: np.ndarray, matrix: np.ndarray, translation: np.ndarray) -> np.ndarray:
    """xyz [P, 3] @ matrix.T + translation -> float32 [P, 3] whose columns are contiguous (the
    transpose of a [3, P] array). Written per column: no BLAS call, whose thread pool stalls on a
    loaded machine."""
    m = matrix.astype(np.float32)
    out = np.empty((3, len(xyz)), dtype=np.float32)
    x, y, z = xyz[:, 0], xyz[:, 1], xyz[:, 2]
    for j in range(3):
        np.multiply(x, m[j, 0], out=out[j])
        out[j] += y * m[j, 1]
        out[j] += z * m[j, 2]
        out[j] += np.float32(translation[j])
    return out.T


def rotation_matrix(ax: float, ay: float, az: float) -> np.ndarray:
    """Rz @ Ry @ Rx for angles in radians -> float64 [3, 3]."""
    cx, sx, cy, sy, cz, sz = np.cos(ax), np.sin(ax), np.cos(ay), np.sin(ay), np.cos(az), np.sin(az)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def _uniform(rng: np.random.Generator, bounds: list[float]) -> float:
    lo, hi = bounds
    return float(rng.uniform(lo, hi)) if hi > lo else float(lo)


def random_affine(cfg: AugmentConfig, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Rotation (per-axis bounds), isotropic scale and flips as one matrix [3, 3], plus a
    translation [3] in metres; applied as xyz @ matrix.T + translation about the scene centre."""
    matrix = rotation_matrix(_uniform(rng, cfg.rotate_x), _uniform(rng, cfg.rotate_y), _uniform(rng, cfg.rotate_z))
    matrix = matrix * _uniform(rng, cfg.scale)
    flips = np.ones(3)
    if rng.random() < cfg.flip_x_p:
        flips[0] = -1.0
    if rng.random() < cfg.flip_y_p:
        flips[1] = -1.0
    matrix = matrix * flips[:, None]  # mirror after rotating: flips act in the output frame
    bound = np.asarray(cfg.translate, dtype=np.float64)
    translation = rng.uniform(-1.0, 1.0, size=3) * bound
    return matrix, translation


def _trilinear(grid: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """Sample grid [X, Y, Z, C] at fractional cell positions pos [P, 3] (inside the grid, >= 0) -> [P, C].

    Flat indices and one 1-D take per channel and corner: about twice as fast here as fancy
    indexing of the 4-D grid."""
    _, ny, nz, channels = grid.shape
    flat = [np.ascontiguousarray(grid[..., c]).ravel() for c in range(channels)]
    base = [pos[:, i].astype(np.int64) for i in range(3)]  # truncation = floor for pos >= 0
    frac = [pos[:, i] - base[i] for i in range(3)]
    index = (base[0] * ny + base[1]) * nz + base[2]
    weights = [(1.0 - f, f) for f in frac]
    out = np.zeros((channels, len(pos)), dtype=np.float32)
    for dx in (0, 1):
        for dy in (0, 1):
            wxy = weights[0][dx] * weights[1][dy]
            for dz in (0, 1):
                w = wxy * weights[2][dz]
                corner = index + (dx * ny * nz + dy * nz + dz)
                for c in range(channels):
                    out[c] += flat[c].take(corner) * w
    return out.T


def elastic_distort(xyz: np.ndarray, granularity: float, magnitude: float, rng: np.random.Generator) -> np.ndarray:
    """Displace points by smoothed Gaussian noise defined on a grid of spacing `granularity`
    (metres), scaled by `magnitude`; smooth over a few cells, so shapes bend without tearing."""
    from scipy.ndimage import uniform_filter1d

    lo, hi = column_min_max(xyz)
    cells = ((hi - lo) / granularity).astype(np.int64) + 4
    noise = rng.standard_normal((*cells, 3), dtype=np.float32)
    for axis in range(3):
        noise = uniform_filter1d(noise, size=3, axis=axis, mode="constant")
    pos = (xyz - lo.astype(np.float32)) / np.float32(granularity) + np.float32(1.0)  # one cell of margin on each side
    return xyz + _trilinear(noise, pos) * magnitude


def auto_contrast(rgb: np.ndarray, rng: np.random.Generator, blend) -> np.ndarray:
    """Blend colours with their per-channel min-max stretched version."""
    lo, hi = column_min_max(rgb)
    lo, span = lo.astype(np.float32), (hi - lo).astype(np.float32)
    span[span == 0] = 255.0
    stretched = (rgb - lo) * (255.0 / span)
    factor = rng.random() if blend is None else blend
    return (1.0 - factor) * rgb + factor * stretched


def augment_colors(rgb: np.ndarray, cfg: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    """Chromatic auto-contrast, translation and jitter, each with its own probability; float32 [M, 3]
    in 0..255 (the input array may be overwritten)."""
    if rng.random() < cfg.autocontrast_p:
        rgb = auto_contrast(rgb, rng, cfg.autocontrast_blend)
    if rng.random() < cfg.color_translate_p:
        rgb = rgb + (rng.random(3, dtype=np.float32) - 0.5) * (2.0 * 255.0 * cfg.color_translate_ratio)
    if rng.random() < cfg.color_jitter_p:
        # uniform noise of the configured std: a quarter of the cost of Gaussian draws here
        half_width = np.float32(255.0 * cfg.color_jitter_std * np.sqrt(3.0))
        noise = rng.random(rgb.shape, dtype=np.float32)
        noise -= np.float32(0.5)
        noise *= 2 * half_width
        rgb = rgb + noise
    return np.clip(rgb, 0.0, 255.0, out=rgb if rgb.dtype == np.float32 else None).astype(np.float32, copy=False)


def dropout_mask(num_points: int, cfg: AugmentConfig, rng: np.random.Generator):
    """Boolean keep-mask [P] removing `dropout_ratio` of the points, or None when not applied."""
    if cfg.dropout_p <= 0 or rng.random() >= cfg.dropout_p:
        return None
    keep = rng.random(num_points) >= cfg.dropout_ratio
    if not keep.any():
        keep[rng.integers(num_points)] = True
    return keep
