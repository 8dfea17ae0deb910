"""Scenes for the report's viewer: the prediction PLYs a run exported, read with plyfile, and
subsampled to the page's point budget.

Test runs write `<run>/predictions/ply/<scene>.ply` (lib/export/ply.py: x, y, z, red, green, blue =
the predicted class's colour, pred, and label / error where labels are known); predict runs write
the same folder with `confidence` and the scan's own colour in red, green, blue. Classes and
colours come from the header comments `class <id> <r> <g> <b> <name>` that lib/export writes.
"""
from pathlib import Path

import numpy as np

from lib import IGNORE_INDEX

# Points stored per scene above which the page keeps a uniform random subsample (the viewer stays
# interactive on a 1M-point scan in a software-rendered headless chromium). README "The run report".
MAX_POINTS_PER_SCENE = 1_000_000
# Points stored on one page in all, shared evenly by its scenes (about 13 bytes per point in the file).
MAX_POINTS_PER_PAGE = 3_000_000
MAX_SCENES_PER_RUN = 12  # scenes shown per run (the first by name); the page says how many were left out


def scene_files(run_dir) -> list[Path]:
    """The run's prediction PLYs, sorted by name."""
    return sorted((Path(run_dir) / "predictions" / "ply").glob("*.ply"))


def read_header_classes(ply) -> tuple[list, list]:
    """(class names, palette [[r, g, b]]) from the `class k r g b name` comments of a PlyData."""
    classes = {}
    for comment in ply.comments:
        parts = comment.split(maxsplit=5)
        if len(parts) == 6 and parts[0] == "class" and all(p.lstrip("-").isdigit() for p in parts[1:5]):
            classes[int(parts[1])] = (parts[5], [int(parts[2]), int(parts[3]), int(parts[4])])
    if not classes or sorted(classes) != list(range(len(classes))):
        return [], []
    return [classes[k][0] for k in range(len(classes))], [classes[k][1] for k in range(len(classes))]


def read_scene(path, max_points: int = MAX_POINTS_PER_SCENE, seed: int = 0) -> dict:
    """One PLY as the viewer's arrays.

    Returns {"name", "points_total", "points_stored", "xyz" float32 [N, 3] metres, "rgb" uint8 [N, 3]
    | None, "pred" int64 [N] | None, "label" int64 [N] | None (IGNORE_INDEX -> -1), "confidence"
    float32 [N] in [0, 1] | None, "class_names", "palette"}. N = min(points, max_points): above
    max_points a uniform random subsample (seeded), kept in file order.
    Raises ValueError naming the file when it has no vertex element with x, y, z.
    """
    from plyfile import PlyData

    path = Path(path)
    try:
        ply = PlyData.read(str(path))
        vertex = ply["vertex"].data
    except (KeyError, ValueError, OSError, EOFError) as exc:
        raise ValueError(f"{path}: not a readable point PLY ({exc})") from None
    names = set(vertex.dtype.names or ())
    if not {"x", "y", "z"} <= names:
        raise ValueError(f"{path}: the vertex element has no x, y, z (fields: {', '.join(sorted(names))})")
    total = len(vertex)
    keep = None
    if total > max_points:
        keep = np.sort(np.random.default_rng(seed).choice(total, size=max_points, replace=False))
        vertex = vertex[keep]

    def field(name, dtype):
        return np.asarray(vertex[name]).astype(dtype) if name in names else None

    xyz = np.stack([vertex["x"], vertex["y"], vertex["z"]], axis=1).astype(np.float32)
    rgb = np.stack([vertex[c] for c in ("red", "green", "blue")], axis=1).astype(np.uint8) \
        if {"red", "green", "blue"} <= names else None
    label = field("label", np.int64)
    if label is not None:
        label[label == IGNORE_INDEX] = -1
    confidence = field("confidence", np.float32)
    class_names, palette = read_header_classes(ply)
    return {"name": path.stem, "points_total": total, "points_stored": len(xyz), "xyz": xyz, "rgb": rgb,
            "pred": field("pred", np.int64), "label": label,
            "confidence": None if confidence is None else np.clip(confidence, 0.0, 1.0),
            "class_names": class_names, "palette": palette}


def is_prediction_colour(scene: dict) -> bool:
    """True when the PLY's red, green, blue are just the predicted class's colour (test-mode PLYs),
    so "RGB" would show nothing the prediction mode does not."""
    rgb, pred, palette = scene["rgb"], scene["pred"], scene["palette"]
    if rgb is None or pred is None or not palette:
        return False
    palette = np.asarray(palette, dtype=np.uint8)
    known = (pred >= 0) & (pred < len(palette))
    return bool(known.any()) and bool(np.all(rgb[known] == palette[pred[known]]))
