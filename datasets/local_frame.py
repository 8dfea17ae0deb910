"""Raw coordinates -> float32 in a local frame, and the size a scene may have.

float32 has 24 bits of mantissa: at 1e6 m its spacing is 6 cm, so georeferenced coordinates cast
to float32 first lose the centimetres a voxel grid needs. Coordinates beyond PRECISE_M (where
float32 spacing exceeds 1 mm) are therefore shifted by a float64 origin (the bounding-box minimum,
rounded down to whole metres) BEFORE the cast; scenes near the origin (rooms, LiDAR sweeps) keep
origin 0 and their coordinates unchanged. The origin goes into the scene's manifest entry
("origin", metres): absolute = stored + origin. Exports write the stored (local) coordinates.

A scene wider than MAX_EXTENT_M along an axis (a point far from the others: a stray 1e5..1e38 m
value) cannot be voxelized into int32 coordinates at centimetre voxels and is rejected as bad input.
"""
from pathlib import Path

import numpy as np

from datasets.errors import DataFormatError

PRECISE_M = 8192.0  # 2**13 m: float32 spacing is 1/1024 m up to here
MAX_EXTENT_M = 10_000.0  # 10 km: far beyond a room (10 m), an S3DIS area (50 m) or a LiDAR sweep (200 m)


def check_extent(coord: np.ndarray, path: Path) -> None:
    """DataFormatError naming `path` when the finite coordinates [P, 3] span more than MAX_EXTENT_M."""
    lo = coord.min(axis=0).astype(np.float64)
    hi = coord.max(axis=0).astype(np.float64)
    span = hi - lo
    axis = int(np.argmax(span))
    if not span[axis] <= MAX_EXTENT_M:
        far = coord[:, axis].astype(np.float64)
        median = float(np.median(far))
        outliers = int((np.abs(far - median) > MAX_EXTENT_M / 2).sum())
        raise DataFormatError(path, f"scene spans {span[axis]:.4g} m along {'xyz'[axis]} (from {lo[axis]:.4g} to "
                                    f"{hi[axis]:.4g}; limit {MAX_EXTENT_M:g} m): {outliers} point(s) lie more than "
                                    f"{MAX_EXTENT_M / 2:g} m from the median, a stray value?")


def to_local_float32(coord: np.ndarray, path: Path) -> tuple[np.ndarray, list[float]]:
    """Finite coordinates [P, 3] of any float type -> (float32 [P, 3] relative to the origin,
    origin [3] float64 metres as a list). Checks the extent first (see module docstring)."""
    check_extent(coord, path)
    origin = np.zeros(3)
    if np.abs(coord).max() >= PRECISE_M:
        origin = np.floor(coord.min(axis=0).astype(np.float64))
    local = (coord.astype(np.float64) - origin).astype(np.float32)
    return local, origin.tolist()
