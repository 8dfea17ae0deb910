"""S3DIS (Stanford3dDataset_v1.2_Aligned_Version): raw rooms -> preprocessed scenes.

Raw layout: RAW/Area_{1..6}/<room>/Annotations/<class>_<k>.txt, lines `x y z r g b`.
The class comes from the file name (stairs count as clutter); scene id `Area_N_<room>`, split tag
`Area_N` (default: val = Area_5, train = the other areas). Damaged lines: see datasets/s3dis_text.py.
"""
from pathlib import Path

import numpy as np

from datasets.errors import DataFormatError
from datasets.local_frame import to_local_float32
from datasets.registry import register_dataset
from datasets.s3dis_text import read_annotation
from datasets.spec import DatasetSpec

NAME = "s3dis"
CLASS_NAMES = ["ceiling", "floor", "wall", "beam", "column", "window", "door", "table", "chair", "sofa",
               "bookcase", "board", "clutter"]
PALETTE = [(0, 255, 0), (0, 0, 255), (0, 255, 255), (255, 255, 0), (255, 0, 255), (100, 100, 255),
           (200, 200, 100), (170, 120, 200), (255, 0, 0), (200, 100, 100), (10, 200, 100), (200, 200, 200),
           (50, 50, 50)]
CLASS_OF_FILE = {name: i for i, name in enumerate(CLASS_NAMES)}
CLASS_OF_FILE["stairs"] = CLASS_NAMES.index("clutter")
DEFAULT_SPLITS = {"train": ["Area_1", "Area_2", "Area_3", "Area_4", "Area_6"], "val": ["Area_5"]}
DEFAULT_FEATURES = ["rgb"]
AVAILABLE_FEATURES = {"rgb"}


def list_raw_scenes(raw_root: Path) -> list[tuple[str, str, Path]]:
    """(scene id, area, room folder) for every room of every Area_* folder."""
    raw_root = Path(raw_root)
    if not raw_root.is_dir():
        raise DataFormatError(raw_root, "S3DIS raw folder not found")
    areas = sorted(p for p in raw_root.iterdir() if p.is_dir() and p.name.startswith("Area_"))
    if not areas:
        raise DataFormatError(raw_root, "no Area_* folders (expected Stanford3dDataset_v1.2_Aligned_Version)")
    return [(f"{area.name}_{room.name}", area.name, room)
            for area in areas for room in sorted(p for p in area.iterdir() if p.is_dir())]


def read_raw_scene(scene_id: str, split: str, folder: Path, strict: bool = True) -> tuple[dict, dict]:
    """Arrays (coord, color, label) and the manifest entry of one room."""
    annotations = folder / "Annotations"
    if not annotations.is_dir():
        raise DataFormatError(annotations, "missing Annotations folder")
    files = sorted(p for p in annotations.glob("*.txt") if not p.name.startswith("."))
    parts, labels, repairs, dropped = [], [], [], 0
    for path in files:
        name = path.stem.rsplit("_", 1)[0]
        if name not in CLASS_OF_FILE:
            raise DataFormatError(path, f"unknown S3DIS class '{name}' (expected one of {', '.join(CLASS_OF_FILE)})")
        rows, fixed, lost = read_annotation(path, strict)
        parts.append(rows)
        labels.append(np.full(len(rows), CLASS_OF_FILE[name], dtype=np.int16))
        repairs += fixed
        dropped += lost
    rows = np.concatenate(parts) if parts else np.zeros((0, 6))
    if len(rows) == 0:
        raise DataFormatError(annotations, "empty scene (no annotated points)")
    label = np.concatenate(labels)
    coord, origin = to_local_float32(rows[:, :3], annotations)  # rows are float64 as parsed
    record = {"split": split, "points": len(rows), "origin": origin,
              "class_counts": np.bincount(label, minlength=len(CLASS_NAMES)).tolist(), "ignored": 0,
              "repairs": repairs, "dropped_lines": dropped}
    arrays = {"coord": coord, "color": rows[:, 3:].astype(np.uint8), "label": label}
    return arrays, record


@register_dataset
class S3DIS(DatasetSpec):
    name = NAME
    class_names = tuple(CLASS_NAMES)
    palette = tuple(PALETTE)
    convention = "nan_absent"
    default_splits = DEFAULT_SPLITS
    default_features = tuple(DEFAULT_FEATURES)
    available_features = frozenset(AVAILABLE_FEATURES)

    def list_raw_scenes(self, raw_root):
        return list_raw_scenes(raw_root)

    def read_raw_scene(self, scene_id, split, location, strict=True):
        return read_raw_scene(scene_id, split, location, strict)

    def raw_inputs(self, scene_id, split, location):
        return sorted(p for p in (Path(location) / "Annotations").glob("*.txt") if not p.name.startswith("."))

    def generate_synthetic(self, out_dir, num_scenes, seed=0, **size_kwargs):
        from datasets.synthetic.s3dis import generate

        return generate(out_dir, num_scenes, seed, **size_kwargs)
