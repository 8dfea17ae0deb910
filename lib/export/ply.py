"""Per-scene prediction PLY: coloured points that Open3D, MeshLab and CloudCompare open directly."""
from pathlib import Path

import numpy as np

from lib import IGNORE_INDEX
from lib.export.colours import UNLABELLED, class_colours

# x, y, z float32 and red, green, blue uchar come first: that is the vertex layout viewers expect.
_BASE_FIELDS = [("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("red", "u1"), ("green", "u1"), ("blue", "u1"),
                ("pred", "<i4")]


def write_ply(path: str | Path, points: np.ndarray, pred: np.ndarray, palette: np.ndarray,
              labels: np.ndarray | None = None, class_names: list[str] | None = None,
              extra: dict[str, np.ndarray] | None = None, comments: list[str] | None = None) -> Path:
    """Writes a binary little-endian PLY of one scene.

    Args:
        path: file to write (its folder is created).
        points: float [P, 3] original xyz in metres.
        pred: int [P] predicted class per point; the colour is palette[pred] (black outside [0, K)).
        palette: uint8 [K, 3] RGB per class.
        labels: optional int [P] ground-truth class (IGNORE_INDEX = unknown); adds int32 `label` and
            uchar `error` (1 = labelled point predicted wrong, 0 = right or unlabelled).
        class_names: optional K names; each class goes into the header as a comment
            `class <id> <r> <g> <b> <name>`, and the colour of unlabelled points as
            `unlabelled <r> <g> <b>` (read by scripts/visualize.py: its renders use these colours).
        extra: optional name -> float [P] per-point values added as float32 fields after the others
            (`--mode predict` adds `confidence`, the highest class probability).
        comments: further header comments (predict: the scan's `origin x y z` in metres).
    """
    from plyfile import PlyData, PlyElement

    points = np.asarray(points)
    pred = np.asarray(pred).astype(np.int64).reshape(-1)
    palette = np.asarray(palette, dtype=np.uint8)
    if points.ndim != 2 or points.shape[1] != 3 or points.shape[0] != pred.shape[0]:
        raise ValueError(f"{path}: points {points.shape} must be [P, 3] with P = {pred.shape[0]} predictions")
    if palette.ndim != 2 or palette.shape[1] != 3:
        raise ValueError(f"{path}: palette {palette.shape} must be [K, 3]")
    fields = list(_BASE_FIELDS)
    if labels is not None:
        labels = np.asarray(labels).astype(np.int64).reshape(-1)
        if labels.shape != pred.shape:
            raise ValueError(f"{path}: labels {labels.shape} and predictions {pred.shape} differ in length")
        fields += [("label", "<i4"), ("error", "u1")]
    extra = {name: np.asarray(v, dtype=np.float32).reshape(-1) for name, v in (extra or {}).items()}
    for name, values in extra.items():
        if values.shape != pred.shape:
            raise ValueError(f"{path}: field {name!r} has {values.shape[0]} values for {pred.shape[0]} points")
        fields.append((name, "<f4"))
    vertex = np.empty(pred.shape[0], dtype=fields)
    vertex["x"], vertex["y"], vertex["z"] = (points[:, i].astype(np.float32) for i in range(3))
    colours = class_colours(pred, palette, outside=(0, 0, 0))  # a prediction outside the classes: black
    vertex["red"], vertex["green"], vertex["blue"] = colours[:, 0], colours[:, 1], colours[:, 2]
    vertex["pred"] = pred
    if labels is not None:
        vertex["label"] = labels
        vertex["error"] = ((labels != IGNORE_INDEX) & (labels >= 0) & (labels != pred)).astype(np.uint8)
    for name, values in extra.items():
        vertex[name] = values
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    comments = list(comments or []) + ([] if class_names is None else
        [f"class {k} {r} {g} {b} {name}" for k, (name, (r, g, b)) in enumerate(zip(class_names, palette.tolist()))]
        + ["unlabelled {} {} {}".format(*UNLABELLED)])
    PlyData([PlyElement.describe(vertex, "vertex")], text=False, byte_order="<", comments=comments).write(str(path))
    return path
