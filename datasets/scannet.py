"""ScanNet v2: official raw layout -> preprocessed scenes, and the dataset over them.

Raw layout (RAW = the ScanNet v2 download):
  RAW/scannetv2_{train,val,test}.txt                 scene ids per split (train and val required)
  RAW/scans/<scene>/<scene>_vh_clean_2.ply            vertex x, y, z, red, green, blue
  RAW/scans/<scene>/<scene>_vh_clean_2.labels.ply     vertex label = NYU40 id (0 = unannotated)
  RAW/scans_test/<scene>/<scene>_vh_clean_2.ply       test scenes (no labels)
Labels: the 20 benchmark NYU40 ids become classes 0..19; every other id becomes IGNORE_INDEX.
Ids that are not NYU40 at all (> 40, found in real files) also become ignore and are counted per id
in the scene's manifest entry under "invalid_ids".
"""
from pathlib import Path

import numpy as np

from datasets.errors import DataFormatError
from datasets.label_values import integer_labels
from datasets.local_frame import to_local_float32
from datasets.ply_io import colors_to_uint8, read_ply_vertices
from datasets.registry import register_dataset
from datasets.spec import DatasetSpec
from lib import IGNORE_INDEX
from lib.export.benchmark import class_to_raw

NAME = "scannet"
CLASS_NAMES = ["wall", "floor", "cabinet", "bed", "chair", "sofa", "table", "door", "window", "bookshelf",
               "picture", "counter", "desk", "curtain", "refrigerator", "shower curtain", "toilet", "sink",
               "bathtub", "otherfurniture"]
NYU40_IDS = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 14, 16, 24, 28, 33, 34, 36, 39]
PALETTE = [(174, 199, 232), (152, 223, 138), (31, 119, 180), (255, 187, 120), (188, 189, 34), (140, 86, 75),
           (255, 152, 150), (214, 39, 40), (197, 176, 213), (148, 103, 189), (196, 156, 148), (23, 190, 207),
           (247, 182, 210), (219, 219, 141), (255, 127, 14), (158, 218, 229), (44, 160, 44), (112, 128, 144),
           (227, 119, 194), (82, 84, 163)]  # the ScanNet benchmark colours
NUM_NYU40 = 40
SAME_VERTEX_M = 1e-3  # labels.ply vertices farther than this from the mesh's belong to another scan
SPLIT_FILES = {"train": "scannetv2_train.txt", "val": "scannetv2_val.txt", "test": "scannetv2_test.txt"}
DEFAULT_SPLITS = {"train": ["train"], "val": ["val"], "test": ["test"]}
DEFAULT_FEATURES = ["rgb"]
AVAILABLE_FEATURES = {"rgb"}

# NYU40 id -> class index; ids 0..40 that are not benchmark classes -> ignore
_NYU40_TO_CLASS = np.full(NUM_NYU40 + 1, IGNORE_INDEX, dtype=np.int64)
_NYU40_TO_CLASS[NYU40_IDS] = np.arange(len(NYU40_IDS))


def map_labels(raw: np.ndarray) -> tuple[np.ndarray, dict[int, int]]:
    """NYU40 ids int64 [P] (datasets.label_values.integer_labels) -> (class index int16 [P],
    {non-NYU40 id: count})."""
    invalid = (raw < 0) | (raw > NUM_NYU40)
    mapped = _NYU40_TO_CLASS[np.where(invalid, 0, raw)]
    ids, counts = np.unique(raw[invalid], return_counts=True)
    return mapped.astype(np.int16), {int(i): int(c) for i, c in zip(ids, counts)}


def list_raw_scenes(raw_root: Path) -> list[tuple[str, str, Path]]:
    """(scene id, split, scene folder) for every scene named in the split files. A scene named in
    two split files (or twice in one) is an error naming both: it would train on validation data."""
    raw_root = Path(raw_root)
    if not raw_root.is_dir():
        raise DataFormatError(raw_root, "ScanNet raw folder not found")
    scenes, listed_in = [], {}
    for split, name in SPLIT_FILES.items():
        path = raw_root / name
        if not path.is_file():
            if split == "test":  # the test scans are a separate download
                continue
            raise DataFormatError(path, f"missing ScanNet split file for '{split}'")
        folder = raw_root / ("scans_test" if split == "test" else "scans")
        for line in path.read_text().split():
            if line in listed_in:
                raise DataFormatError(path, f"scene {line} is also listed in {listed_in[line]}; a scene "
                                            "belongs to one split")
            listed_in[line] = path
            scenes.append((line, split, folder / line))
    return scenes


def read_mesh(mesh: Path) -> tuple[np.ndarray, np.ndarray]:
    """(xyz [P, 3] in the file's precision, colour uint8 [P, 3]) of a `_vh_clean_2.ply`, checked:
    one-line DataFormatError naming the file for a broken PLY, no vertices, NaN/inf coordinates."""
    v = read_ply_vertices(mesh, ["x", "y", "z", "red", "green", "blue"])
    raw_coord = np.stack([v["x"], v["y"], v["z"]], axis=1)  # stored precision (float64 files stay float64)
    color = colors_to_uint8([v["red"], v["green"], v["blue"]], mesh)
    if len(raw_coord) == 0:
        raise DataFormatError(mesh, "empty scene (0 vertices)")
    if not np.isfinite(raw_coord).all():
        raise DataFormatError(mesh, f"{int((~np.isfinite(raw_coord)).any(axis=1).sum())} vertices with NaN/inf coordinates")
    return raw_coord, color


def labels_file(mesh: Path) -> Path:
    """The `_vh_clean_2.labels.ply` beside a `_vh_clean_2.ply`."""
    return mesh.with_name(mesh.name.removesuffix(".ply") + ".labels.ply")


def read_mesh_labels(label_path: Path, raw_coord: np.ndarray, mesh_name: str) -> np.ndarray:
    """NYU40 ids int64 [P] of a labels.ply, checked against its mesh's vertices (`raw_coord`)."""
    lv = read_ply_vertices(label_path, ["label"], optional=("x", "y", "z"))
    raw = integer_labels(lv["label"], label_path)
    if len(raw) != len(raw_coord):
        raise DataFormatError(label_path, f"{len(raw)} labelled vertices but the mesh has {len(raw_coord)}")
    if all(k in lv for k in "xyz"):  # the official files repeat the mesh's vertices: check they match
        gap = np.abs(np.stack([lv["x"], lv["y"], lv["z"]], axis=1).astype(np.float64) - raw_coord).max(axis=1)
        moved = ~(gap <= SAME_VERTEX_M)  # NaN counts as moved
        if moved.any():
            raise DataFormatError(label_path, f"{int(moved.sum())} of {len(gap)} vertices differ from {mesh_name} "
                                              f"(up to {np.nanmax(gap):.3g} m): labels of another scan?")
    return raw


def read_raw_scene(scene_id: str, split: str, folder: Path) -> tuple[dict, dict]:
    """Arrays (coord, color, label) and the manifest entry of one raw scene."""
    if not folder.is_dir():
        raise DataFormatError(folder, "scene folder listed in the split file is missing")
    mesh = folder / f"{scene_id}_vh_clean_2.ply"
    raw_coord, color = read_mesh(mesh)
    coord, origin = to_local_float32(raw_coord, mesh)
    record = {"split": split, "points": len(coord), "origin": origin}
    if split == "test":
        label = np.full(len(coord), IGNORE_INDEX, dtype=np.int16)
        invalid = {}
    else:
        label, invalid = map_labels(read_mesh_labels(labels_file(mesh), raw_coord, mesh.name))
    valid = label[label != IGNORE_INDEX]
    record["class_counts"] = np.bincount(valid, minlength=len(CLASS_NAMES)).tolist()
    record["ignored"] = int(len(label) - len(valid))
    record["invalid_ids"] = {str(k): c for k, c in invalid.items()}
    return {"coord": coord, "color": color, "label": label}, record


def write_benchmark_file(out_dir: Path, scene: str, pred: np.ndarray, raw_ids: np.ndarray) -> Path:
    """`<out_dir>/<scene>.txt`: one NYU40 id per line, one line per vertex of `<scene>_vh_clean_2.ply`.

    That folder is what ScanNet's evaluate_semantic_label.py takes as --pred_path. `pred` must
    hold one class per ORIGINAL vertex, in the file's vertex order.
    """
    path = Path(out_dir) / f"{scene}.txt"
    ids = class_to_raw(pred, raw_ids, str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savetxt(path, ids, fmt="%d")
    return path


@register_dataset
class ScanNet(DatasetSpec):
    name = NAME
    class_names = tuple(CLASS_NAMES)
    palette = tuple(PALETTE)
    raw_ids = tuple(NYU40_IDS)
    convention = "nan_absent"  # evaluate_semantic_label.py: classes without GT or prediction are left out
    benchmark = "scannet"
    default_splits = DEFAULT_SPLITS
    default_features = tuple(DEFAULT_FEATURES)
    available_features = frozenset(AVAILABLE_FEATURES)

    def list_raw_scenes(self, raw_root):
        return list_raw_scenes(raw_root)

    def read_raw_scene(self, scene_id, split, location, strict=True):
        return read_raw_scene(scene_id, split, location)

    def scene_info(self, manifest, scene_ids):
        return {s: {"scan": s} for s in scene_ids}

    def raw_inputs(self, scene_id, split, location):
        folder = Path(location)
        labels = [] if split == "test" else [folder / f"{scene_id}_vh_clean_2.labels.ply"]
        return [folder / f"{scene_id}_vh_clean_2.ply", *labels]

    def write_benchmark(self, out_dir, scene, points, pred, meta, labels=None):
        return write_benchmark_file(out_dir, scene, pred, meta.raw_ids)

    def generate_synthetic(self, out_dir, num_scenes, seed=0, **size_kwargs):
        from datasets.synthetic.scannet import generate

        return generate(out_dir, num_scenes, seed, **size_kwargs)
