"""SemanticKITTI, read in place: preprocessing only checks and indexes the frames.

Raw layout: RAW/sequences/NN/velodyne/FFFFFF.bin (float32 x, y, z, remission per point) and
RAW/sequences/NN/labels/FFFFFF.label (uint32: semantic id in the low 16 bits, instance above).
Labels map through the official learning_map in datasets/semantic-kitti.yaml: learning class c in
1..19 becomes class index c - 1, class 0 (unlabeled, outlier, ...) becomes IGNORE_INDEX. A raw
semantic id absent from learning_map is an error. Scene id `NN_FFFFFF`, split tag `NN`.
"""
import re
from functools import lru_cache
from pathlib import Path

import numpy as np

from datasets.errors import DataFormatError
from datasets.local_frame import check_extent
from datasets.registry import register_dataset
from datasets.spec import DatasetSpec
from datasets.voxel_dataset import VoxelDataset, check_scene_arrays
from lib import IGNORE_INDEX
from lib.export.benchmark import class_to_raw

NAME = "semantickitti"
LABEL_CONFIG = Path(__file__).resolve().parent / "semantic-kitti.yaml"  # a label map, not a recipe
DEFAULT_SPLITS = {"train": ["00", "01", "02", "03", "04", "05", "06", "07", "09", "10"], "val": ["08"],
                  "test": [f"{s:02d}" for s in range(11, 22)]}
DEFAULT_FEATURES = ["remission"]
AVAILABLE_FEATURES = {"remission"}
_UNKNOWN = -1
LABELLED_SEQUENCES = {s for split in ("train", "val") for s in DEFAULT_SPLITS[split]}  # 00..10 ship labels


@lru_cache(maxsize=1)
def label_config() -> dict:
    import yaml

    with open(LABEL_CONFIG) as f:
        return yaml.safe_load(f)


@lru_cache(maxsize=1)
def _lookup() -> np.ndarray:
    """Raw semantic id -> class index (IGNORE_INDEX for learning class 0, _UNKNOWN for unmapped ids)."""
    learning_map = label_config()["learning_map"]
    table = np.full(max(learning_map) + 1, _UNKNOWN, dtype=np.int64)
    for raw, cls in learning_map.items():
        table[raw] = cls - 1 if cls > 0 else IGNORE_INDEX
    return table


def class_names() -> list[str]:
    cfg = label_config()
    inv = cfg["learning_map_inv"]
    return [cfg["labels"][inv[c]] for c in range(1, len(inv))]


def map_labels(raw: np.ndarray, path: Path) -> np.ndarray:
    """uint32 labels [P] -> class index int64 [P]; DataFormatError naming `path` for unmapped ids."""
    semantic = (raw & 0xFFFF).astype(np.int64)
    table = _lookup()
    outside = semantic >= len(table)
    mapped = table[np.where(outside, 0, semantic)]
    bad = outside | (mapped == _UNKNOWN)
    if bad.any():
        ids = np.unique(semantic[bad])
        raise DataFormatError(path, f"label ids out of range (not in learning_map): {ids[:10].tolist()}")
    return mapped


def read_points(path: Path) -> np.ndarray:
    """float32 [P, 4] (x, y, z metres, remission) from a velodyne .bin, validated."""
    if not path.is_file():
        raise DataFormatError(path, "file not found")
    size = path.stat().st_size
    if size % 16:
        raise DataFormatError(path, f"size {size} bytes is not a multiple of 16 (4 float32 per point)")
    if size == 0:
        raise DataFormatError(path, "empty scene (0 points)")
    return np.fromfile(path, dtype=np.float32).reshape(-1, 4)


def read_label_words(path: Path, num_points: int) -> np.ndarray:
    """The uint32 words [P] of a .label file holding `num_points` of them (semantic id in the low 16
    bits, instance above)."""
    if not path.is_file():
        raise DataFormatError(path, "file not found")
    raw = np.fromfile(path, dtype=np.uint32)
    if path.stat().st_size % 4 or len(raw) != num_points:
        raise DataFormatError(path, f"{path.stat().st_size / 4:g} labels for {num_points} points")
    return raw


def read_labels(path: Path, num_points: int) -> np.ndarray:
    """Class index int64 [P] from a .label file holding `num_points` uint32."""
    return map_labels(read_label_words(path, num_points), path)


def read_frame(bin_path: Path) -> np.ndarray:
    """float32 [P, 4] (x, y, z metres, remission) of a velodyne .bin, checked: size, NaN/inf
    coordinates, a stray point beyond 10 km."""
    points = read_points(bin_path)
    if not np.isfinite(points[:, :3]).all():
        raise DataFormatError(bin_path, f"{int((~np.isfinite(points[:, :3])).any(axis=1).sum())} points with NaN/inf coordinates")
    check_extent(points[:, :3], bin_path)
    return points


def frame_labels_file(bin_path: Path) -> Path:
    """sequences/NN/labels/FFFFFF.label beside sequences/NN/velodyne/FFFFFF.bin."""
    return bin_path.parent.parent / "labels" / f"{bin_path.stem}.label"


def list_raw_scenes(raw_root: Path) -> list[tuple[str, str, Path]]:
    """(scene id, sequence, sequence folder) for every velodyne frame."""
    sequences = Path(raw_root) / "sequences"
    if not sequences.is_dir():
        raise DataFormatError(sequences, "SemanticKITTI sequences folder not found")
    scenes = []
    for seq in sorted(p for p in sequences.iterdir() if p.is_dir()):
        velodyne = seq / "velodyne"
        if not velodyne.is_dir():
            raise DataFormatError(velodyne, "missing velodyne folder")
        scenes += [(f"{seq.name}_{f.stem}", seq.name, seq) for f in sorted(velodyne.glob("*.bin"))]
    return scenes


def read_raw_scene(scene_id: str, split: str, folder: Path) -> tuple[dict, dict]:
    """No arrays (read in place); the manifest entry after checking the frame."""
    frame = scene_id.split("_", 1)[1]
    bin_path = folder / "velodyne" / f"{frame}.bin"
    points = read_frame(bin_path)
    record = {"split": split, "points": len(points), "sequence": folder.name, "frame": frame,
              "velodyne": f"sequences/{folder.name}/velodyne/{frame}.bin", "label": None}
    num_classes = len(class_names())
    if (folder / "labels").is_dir():
        label = read_labels(folder / "labels" / f"{frame}.label", len(points))
        valid = label[label != IGNORE_INDEX]
        record["label"] = f"sequences/{folder.name}/labels/{frame}.label"
        record["class_counts"] = np.bincount(valid, minlength=num_classes).tolist()
        record["ignored"] = int(len(label) - len(valid))
    elif folder.name in LABELLED_SEQUENCES:  # without labels it would train on all-ignore points, loss 0
        raise DataFormatError(folder / "labels", f"missing labels folder of sequence {folder.name} "
                                                 "(a training / validation sequence)")
    else:  # test sequences have no labels
        record["class_counts"] = [0] * num_classes
        record["ignored"] = len(points)
    return {}, record


class SemanticKittiDataset(VoxelDataset):
    """Frames read from the raw files named in the manifest (manifest["raw_root"])."""

    def load_scene(self, scene_id: str) -> dict:
        record = self.manifest["scenes"][scene_id]
        raw_root = Path(self.manifest["raw_root"])
        points = read_points(raw_root / record["velodyne"])
        if len(points) != record["points"]:
            raise DataFormatError(raw_root / record["velodyne"], f"holds {len(points)} points but {record['points']} "
                                  "when preprocessed: the file changed since; re-run scripts/preprocess.py")
        if record["label"]:
            label = read_labels(raw_root / record["label"], len(points))
        else:
            label = np.full(len(points), IGNORE_INDEX, dtype=np.int64)
        check_scene_arrays(raw_root / record["velodyne"], points[:, :3], label, self.meta.num_classes)
        return {"coord": points[:, :3], "label": label, "remission": points[:, 3]}


def kitti_frame(scene: str, info: dict | None = None) -> tuple[str, str]:
    """(sequence 'NN', frame 'NNNNNN') of a SemanticKITTI scan.

    From `info` (DatasetMeta.scene_info[scene], keys `sequence`, `frame`) when given, else parsed
    from the scene name: the first 2-digit and 6-digit number groups ('00/000123', '08_000001',
    'sequences/08/velodyne/000001.bin').
    """
    if info and "sequence" in info and "frame" in info:
        return f"{int(info['sequence']):02d}", f"{int(info['frame']):06d}"
    match = re.search(r"(?<!\d)(\d{2})(?!\d)\D+(\d{6})(?!\d)", scene)
    if not match:
        raise ValueError(f"scene {scene!r}: cannot tell the SemanticKITTI sequence and frame "
                         "(expected 'NN/NNNNNN' or meta.scene_info with sequence and frame)")
    return match.group(1), match.group(2)


def write_benchmark_file(out_dir: Path, scene: str, pred: np.ndarray, raw_ids: np.ndarray,
                         info: dict | None = None) -> Path:
    """`<out_dir>/sequences/NN/predictions/NNNNNN.label`: uint32 raw id per point (instance bits 0).

    `raw_ids` is learning_map_inv over the classes (DatasetMeta.raw_ids). `<out_dir>` is what
    semantic-kitti-api's evaluate_semantics.py takes as --predictions.
    """
    sequence, frame = kitti_frame(scene, info)
    path = Path(out_dir) / "sequences" / sequence / "predictions" / f"{frame}.label"
    ids = class_to_raw(pred, raw_ids, str(path))
    if ids.size and (ids.min() < 0 or ids.max() > 0xFFFF):
        raise ValueError(f"{path}: raw ids must fit the 16 semantic bits, got {ids.min()}..{ids.max()}")
    path.parent.mkdir(parents=True, exist_ok=True)
    ids.astype("<u4").tofile(path)
    return path


@register_dataset
class SemanticKitti(DatasetSpec):
    """Classes, colours and official ids come from the official label config (LABEL_CONFIG)."""

    name = NAME
    convention = "zero_absent"  # np_ioueval: class 0 = ignore, absent classes score 0
    benchmark = "semantickitti"
    default_splits = DEFAULT_SPLITS
    default_features = tuple(DEFAULT_FEATURES)
    available_features = frozenset(AVAILABLE_FEATURES)

    @property
    def class_names(self):
        return tuple(class_names())

    @property
    def raw_ids(self):
        inv = label_config()["learning_map_inv"]
        return tuple(inv[c] for c in range(1, len(inv)))

    @property
    def palette(self):
        return tuple(tuple(label_config()["color_map"][r][::-1]) for r in self.raw_ids)  # BGR -> RGB

    def build_meta(self, manifest, in_channels, scene_ids):
        meta = super().build_meta(manifest, in_channels, scene_ids)
        learning_map = label_config()["learning_map"]
        meta.label_values = [sorted(raw for raw, c in learning_map.items() if c == k + 1)
                             for k in range(meta.num_classes)]
        return meta

    def list_raw_scenes(self, raw_root):
        return list_raw_scenes(raw_root)

    def read_raw_scene(self, scene_id, split, location, strict=True):
        return read_raw_scene(scene_id, split, location)

    def raw_inputs(self, scene_id, split, location):
        frame = scene_id.split("_", 1)[1]
        folder = Path(location)
        return [folder / "velodyne" / f"{frame}.bin", folder / "labels" / f"{frame}.label", LABEL_CONFIG]

    def scene_info(self, manifest, scene_ids):
        records = manifest["scenes"]
        return {s: {"sequence": records[s]["sequence"], "frame": records[s]["frame"]} for s in scene_ids}

    def make_dataset(self, root, manifest, scene_ids, meta, cfg, features, augment, seed, rank):
        return SemanticKittiDataset(root, manifest, scene_ids, meta, cfg, features, augment=augment, seed=seed,
                                    rank=rank)

    def write_benchmark(self, out_dir, scene, points, pred, meta, labels=None):
        return write_benchmark_file(out_dir, scene, pred, meta.raw_ids, meta.scene_info.get(scene))

    def generate_synthetic(self, out_dir, num_scenes, seed=0, **size_kwargs):
        from datasets.synthetic.kitti import generate

        return generate(out_dir, num_scenes, seed, **size_kwargs)
