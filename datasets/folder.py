"""Your own point clouds: any folder of point files plus a small classes.yaml (README, "Train on
your own point clouds").

Layout (RAW = the folder; scene id = file name without suffix, unique across the folder):
  RAW/classes.yaml                   the classes (below)
  RAW/<split>/<scene>.{ply,npy,txt,csv}   split folders (train, val, test, any name), or
  RAW/splits/<split>.txt             split files: one point file per line, relative to RAW
  RAW/.../<scene>.labels             optional: labels of <scene> as one integer per line
Point files: see datasets/point_files.py (x, y, z metres; optional red, green, blue and
nx, ny, nz; a label field). Colours are scaled by their stored type (uchar as is, 16-bit / 257,
float 0..1 x 255: datasets/ply_io.colors_to_uint8); coordinates far from 0 (georeferenced float64
files) are stored relative to a float64 origin kept in the scene's manifest entry, and a scene
wider than 10 km is rejected (datasets/local_frame.py). A scene in two splits is an error.

classes.yaml:
  classes:                  # class index = position in this list
    - name: ground
      color: [140, 110, 80]  # optional RGB 0..255 (default: a generated palette)
      ids: [1, 7]            # optional label values in the files meaning this class (default: its index)
  ignore: [0]               # optional label values left out of training and scoring
  label_field: label        # optional name of the label field / column (default: label)
  columns: [x, y, z, red, green, blue, label]  # optional names of plain .npy / .txt / .csv columns
  unlabeled_splits: [test]  # optional splits whose files may lack labels (default: [test])
A label value that is neither a class id nor ignored is an error naming the file (or, with
strict=false, the scene is skipped and counted).
"""
import colorsys
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple, Optional

import numpy as np

from datasets.errors import DataFormatError
from datasets.label_values import integer_labels
from datasets.local_frame import to_local_float32
from datasets.meta import DatasetMeta
from datasets.ply_io import colors_to_uint8
from datasets.point_files import LABEL_SIDE_FILE, SUFFIXES, read_columns, read_side_labels
from datasets.registry import register_dataset
from datasets.spec import DatasetSpec
from lib import IGNORE_INDEX
from lib.export.benchmark import class_to_raw

CLASSES_FILE = "classes.yaml"
SPLITS_FOLDER = "splits"
_KEYS = ("classes", "ignore", "label_field", "columns", "unlabeled_splits")
_CLASS_KEYS = ("name", "color", "ids")


class ClassTable(NamedTuple):
    names: list[str]
    palette: list[list[int]]  # [K][3] RGB
    ids: list[list[int]]  # label values per class
    ignore: list[int]
    label_field: str
    columns: list[str] | None
    unlabeled_splits: list[str]

    def as_dict(self) -> dict:
        return self._asdict()


class FolderScene(NamedTuple):
    classes_yaml: str
    file: str


def _palette(k: int) -> list[list[int]]:
    """k distinct colours: hues spread by the golden ratio."""
    return [[int(255 * c) for c in colorsys.hsv_to_rgb((0.1 + i * 0.618034) % 1.0, 0.65, 0.9)] for i in range(k)]


def _int_list(path, key, value) -> list[int]:
    values = value if isinstance(value, list) else [value]
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        raise DataFormatError(path, f"'{key}' must be an integer or a list of integers, got {value!r}")
    return list(values)


def load_classes(path: str) -> ClassTable:
    """Parse and check classes.yaml (cached while the file is unchanged); DataFormatError naming the
    file and the key at fault."""
    path = Path(path)
    if not path.is_file():
        raise DataFormatError(path, f"missing {CLASSES_FILE} (the class names, colours and ids of this folder)")
    stat = path.stat()
    return _parse_classes(str(path), stat.st_mtime_ns, stat.st_size)


@lru_cache(maxsize=8)
def _parse_classes(path: str, mtime_ns: int, size: int) -> ClassTable:
    import yaml

    from lib.config import suggest
    from lib.config.loader import safe_load

    path = Path(path)
    try:
        doc = safe_load(path.read_text()) or {}  # a key given twice is an error, as in recipes
    except yaml.YAMLError as exc:
        raise DataFormatError(path, f"not valid YAML ({' '.join(str(exc).split())})") from None
    if not isinstance(doc, dict):
        raise DataFormatError(path, "expected a mapping with a 'classes' list")
    for key in doc:
        if key not in _KEYS:
            raise DataFormatError(path, f"unknown key '{key}'{suggest(str(key), list(_KEYS))}")
    entries = doc.get("classes")
    if not isinstance(entries, list) or not entries:
        raise DataFormatError(path, "'classes' must be a non-empty list of {name, color, ids}")
    names, palette, ids = [], [], []
    default_colours = _palette(len(entries))
    for index, entry in enumerate(entries):
        entry = {"name": entry} if isinstance(entry, str) else entry
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise DataFormatError(path, f"classes[{index}] needs a 'name'")
        for key in entry:
            if key not in _CLASS_KEYS:
                raise DataFormatError(path, f"unknown key 'classes[{index}].{key}'{suggest(str(key), list(_CLASS_KEYS))}")
        colour = entry.get("color", default_colours[index])
        if not (isinstance(colour, list) and len(colour) == 3 and all(isinstance(c, int) and 0 <= c <= 255 for c in colour)):
            raise DataFormatError(path, f"classes[{index}].color must be three integers 0..255, got {colour!r}")
        names.append(entry["name"])
        palette.append(colour)
        ids.append(_int_list(path, f"classes[{index}].ids", entry.get("ids", index)))
    ignore = _int_list(path, "ignore", doc.get("ignore", []))
    seen = {}
    for index, values in enumerate(ids + [ignore]):
        for value in values:
            if value in seen:
                raise DataFormatError(path, f"label value {value} is claimed twice ({seen[value]} and "
                                            f"{names[index] if index < len(names) else 'ignore'})")
            seen[value] = names[index] if index < len(names) else "ignore"
    columns = doc.get("columns")
    if columns is not None and not (isinstance(columns, list) and all(isinstance(c, str) for c in columns)):
        raise DataFormatError(path, f"'columns' must be a list of names, got {columns!r}")
    unlabeled = doc.get("unlabeled_splits", ["test"])
    if not (isinstance(unlabeled, list) and all(isinstance(s, str) for s in unlabeled)):
        raise DataFormatError(path, f"'unlabeled_splits' must be a list of split names, got {unlabeled!r}")
    return ClassTable(names, palette, ids, ignore, str(doc.get("label_field", "label")), columns, unlabeled)


def map_labels(path: Path, raw: np.ndarray, table: ClassTable) -> np.ndarray:
    """Label values [P] -> class index int16 [P] (IGNORE_INDEX for ignored values)."""
    raw = integer_labels(raw, path, table.label_field)
    values, inverse = np.unique(raw, return_inverse=True)
    lookup = {v: c for c, vs in enumerate(table.ids) for v in vs} | {v: IGNORE_INDEX for v in table.ignore}
    unknown = [int(v) for v in values if int(v) not in lookup]
    if unknown:
        raise DataFormatError(path, f"label value(s) {unknown[:10]} are not in {CLASSES_FILE} "
                                    f"(add them to a class's 'ids' or to 'ignore')")
    return np.array([lookup[int(v)] for v in values], dtype=np.int16)[inverse.reshape(-1)]


def read_point_file(path: Path, columns, label_field: str) -> tuple[dict, list[float], Optional[np.ndarray]]:
    """(arrays, origin, raw label values or None) of one point file: coord float32 [P, 3] relative
    to origin [3] (float64 metres, see datasets/local_frame.py), and color uint8 [P, 3] (scaled by
    its stored type, datasets/ply_io.colors_to_uint8) / normal float32 [P, 3] when present; the
    labels come from the side file `<stem>.labels` or the column `label_field`, not yet mapped.
    Checked: x, y, z present, no points, NaN/inf coordinates, partial colour or normal columns, a
    label count that differs from the point count."""
    data = read_columns(path, columns)
    have = ", ".join(sorted(data))
    if not {"x", "y", "z"} <= set(data):
        raise DataFormatError(path, f"no x, y, z fields (has {have})")
    raw_coord = np.stack([data["x"], data["y"], data["z"]], axis=1)  # stored precision: float64 stays float64
    if len(raw_coord) == 0:
        raise DataFormatError(path, "empty scene (0 points)")
    if not np.isfinite(raw_coord).all():
        raise DataFormatError(path, f"{int((~np.isfinite(raw_coord)).any(axis=1).sum())} points with NaN/inf coordinates")
    coord, origin = to_local_float32(raw_coord, path)
    arrays = {"coord": coord}
    for name, fields in (("color", ("red", "green", "blue")), ("normal", ("nx", "ny", "nz"))):
        present = [f for f in fields if f in data]
        if present and len(present) < 3:
            raise DataFormatError(path, f"has {', '.join(present)} but not all of {', '.join(fields)}")
        if present and name == "color":
            arrays[name] = colors_to_uint8([data[f] for f in fields], path)
        elif present:
            arrays[name] = np.stack([data[f] for f in fields], axis=1).astype(np.float32)
    side = read_side_labels(path)
    raw = side if side is not None else data.get(label_field)
    if raw is not None and len(raw) != len(coord):
        raise DataFormatError(path, f"{len(raw)} labels for {len(coord)} points")
    return arrays, origin, None if raw is None else np.asarray(raw)


def read_scene(path: Path, table: ClassTable, labelled: bool) -> tuple[dict[str, np.ndarray], list[float]]:
    """(arrays, origin) of `read_point_file` plus label int16 [P] mapped through `table`."""
    arrays, origin, raw = read_point_file(path, table.columns, table.label_field)
    if raw is None:
        if labelled:
            have = ", ".join(sorted(read_columns(path, table.columns)))
            raise DataFormatError(path, f"no label field '{table.label_field}' (has {have}; set 'label_field' or "
                                        f"'columns' in {CLASSES_FILE}, or add {path.stem}.labels)")
        arrays["label"] = np.full(len(arrays["coord"]), IGNORE_INDEX, dtype=np.int16)
        return arrays, origin
    arrays["label"] = map_labels(path, raw, table)
    return arrays, origin


def _split_files(root: Path) -> list[tuple[str, Path, Path]]:
    """(split, point file, the split file naming it), in file order."""
    listed = []
    for split_file in sorted((root / SPLITS_FOLDER).glob("*.txt")):
        for line in split_file.read_text().splitlines():
            if line.strip() and not line.lstrip().startswith("#"):
                listed.append((split_file.stem, root / line.strip(), split_file))
    return listed


def _split_folders(root: Path) -> list[tuple[str, Path, Path]]:
    """(split, point file, its split folder)."""
    return [(folder.name, f, folder) for folder in sorted(p for p in root.iterdir() if p.is_dir())
            for f in sorted(folder.iterdir()) if f.suffix.lower() in SUFFIXES]


@register_dataset
class Folder(DatasetSpec):
    name = "folder"
    convention = "nan_absent"
    benchmark = "labels"  # <scene>.txt: the first label value of the predicted class, one per point
    default_splits = {"train": ["train"], "val": ["val"], "test": ["test"]}

    def list_raw_scenes(self, raw_root):
        root = Path(raw_root)
        classes = root / CLASSES_FILE
        load_classes(str(classes))
        listed = _split_files(root) if (root / SPLITS_FOLDER).is_dir() else _split_folders(root)
        if not listed:
            raise DataFormatError(root, f"no point files ({', '.join(SUFFIXES)}) in split folders or {SPLITS_FOLDER}/*.txt")
        seen, scenes = {}, []
        for split, path, source in listed:
            if path.stem in seen:
                other_split, other_path, other_source = seen[path.stem]
                if other_split != split:  # it would train on validation (or test) data
                    raise DataFormatError(source, f"scene '{path.stem}' is also in split '{other_split}' "
                                                  f"({other_source}); a scene belongs to one split")
                raise DataFormatError(path, f"scene name '{path.stem}' is used twice (also {other_path})")
            seen[path.stem] = (split, path, source)
            scenes.append((path.stem, split, FolderScene(str(classes), str(path))))
        return scenes

    def read_raw_scene(self, scene_id, split, location, strict=True):
        table = load_classes(location.classes_yaml)
        path = Path(location.file)
        arrays, origin = read_scene(path, table, labelled=split not in table.unlabeled_splits)
        label = arrays["label"]
        valid = label[label != IGNORE_INDEX]
        record = {"split": split, "points": len(label), "file": str(path), "origin": origin,
                  "class_counts": np.bincount(valid, minlength=len(table.names)).tolist(),
                  "ignored": int(len(label) - len(valid)), "color": "color" in arrays, "normal": "normal" in arrays}
        return arrays, record

    def raw_inputs(self, scene_id, split, location):
        path = Path(location.file)
        return [path, path.with_suffix(LABEL_SIDE_FILE), Path(location.classes_yaml)]

    def unlabelled_splits(self, raw_root):
        return set(load_classes(str(Path(raw_root) / CLASSES_FILE)).unlabeled_splits)

    def describe(self, raw_root):
        table = load_classes(str(Path(raw_root) / CLASSES_FILE))
        return {"class_names": list(table.names), "classes": table.as_dict()}

    def features(self, manifest):
        records = manifest["scenes"].values()
        available = {name for name, key in (("rgb", "color"), ("normal", "normal"))
                     if records and all(r.get(key) for r in records)}
        return (["rgb"] if "rgb" in available else ["ones"]), available

    def build_meta(self, manifest, in_channels, scene_ids):
        table = manifest["classes"]
        return DatasetMeta(name=self.name, class_names=list(table["names"]), in_channels=in_channels,
                           palette=np.array(table["palette"], dtype=np.uint8),
                           raw_ids=np.array([ids[0] for ids in table["ids"]], dtype=np.int64),
                           benchmark=self.benchmark, convention=self.convention,
                           scene_info={s: {} for s in scene_ids}, benchmark_writer=self.write_benchmark,
                           label_values=[list(ids) for ids in table["ids"]], label_field=table["label_field"],
                           columns=table.get("columns"))

    def write_benchmark(self, out_dir, scene, points, pred, meta, labels=None):
        path = Path(out_dir) / f"{scene}.txt"
        ids = class_to_raw(pred, meta.raw_ids, str(path))
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savetxt(path, ids, fmt="%d")
        return path

    def generate_synthetic(self, out_dir, num_scenes, seed=0, **size_kwargs):
        from datasets.synthetic.folder import generate

        return generate(out_dir, num_scenes, seed, **size_kwargs)
