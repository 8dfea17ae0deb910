"""Single scans for `--mode predict`: any point file, read with the readers preprocessing uses.

A scan is one file; what reads it is told by its name:
  <scene>_vh_clean_2.ply   ScanNet mesh (datasets/scannet.py), labels from the `.labels.ply` beside it
  <frame>.bin              SemanticKITTI velodyne frame (datasets/semantickitti.py), labels from
                           ../labels/<frame>.label when present
  .ply .npy .txt .csv .las .laz   any other point file (datasets/folder.py read_point_file:
                           x, y, z, colour, normals, a label column or `<stem>.labels`)
So the colour scaling, the local frame (origin shift) and the bad-input checks are those of
preprocessing. Labels found in a file are raw values (NYU40 ids, KITTI semantic ids, classes.yaml
ids): they map to classes through the model card's `label_values`; a value the card does not know
becomes IGNORE_INDEX and is counted in the scan's record ("unscored_label_values").

The scan's name (its PLY / label file name) is what preprocessing would call the scene:
`scene0000_00` for a ScanNet mesh, `NN_FFFFFF` for a KITTI frame in sequences/NN/, the file stem
otherwise (made unique with its parent folders' names when two inputs share a stem).
"""
from pathlib import Path
from typing import Optional

import numpy as np

from datasets.errors import DataFormatError
from datasets.meta import DatasetMeta
from datasets.point_files import SUFFIXES
from datasets.voxel_dataset import VoxelDataset
from lib import IGNORE_INDEX

SCANNET_MESH = "_vh_clean_2.ply"
SCAN_SUFFIXES = (*SUFFIXES, ".bin")
# what each feature needs from a file, and how to say it is missing
_NEEDS = {"rgb": ("color", "colour (red, green, blue)"), "normal": ("normal", "normals (nx, ny, nz)"),
          "remission": ("remission", "remission (a KITTI .bin's 4th value)")}


def is_label_file(path: Path) -> bool:
    """Label files that sit beside scans and are not scans themselves."""
    return path.name.endswith(".labels.ply") or path.suffix == ".labels" or path.suffix == ".label"


def list_scans(inputs) -> list[Path]:
    """The scan files named by `inputs` (files, or folders searched recursively for SCAN_SUFFIXES),
    in the order given, folders sorted. DataFormatError naming the path for a missing input, a file
    of another type, or a folder without scans."""
    scans = []
    for given in map(Path, inputs):
        if given.is_dir():
            found = sorted(p for p in given.rglob("*") if p.is_file() and p.suffix.lower() in SCAN_SUFFIXES
                           and not is_label_file(p) and not p.name.startswith("."))
            if not found:
                raise DataFormatError(given, f"no point files ({', '.join(SCAN_SUFFIXES)}) in this folder")
            scans += found
        elif given.is_file():
            if given.suffix.lower() not in SCAN_SUFFIXES:
                raise DataFormatError(given, f"unsupported point file type '{given.suffix}' "
                                             f"(use {', '.join(SCAN_SUFFIXES)})")
            scans.append(given)
        else:
            raise DataFormatError(given, "no such file or folder")
    return list(dict.fromkeys(p.resolve() for p in scans))


def _base_name(path: Path) -> str:
    if path.name.endswith(SCANNET_MESH):
        return path.name[:-len(SCANNET_MESH)]
    if path.suffix == ".bin" and path.parent.name == "velodyne":
        return f"{path.parent.parent.name}_{path.stem}"
    return path.stem


def scan_names(paths: list[Path]) -> list[str]:
    """One unique name per scan (module docstring): the base name, with parent folder names
    prefixed ('a_b_scan') where two scans would otherwise share it."""
    names = [_base_name(p) for p in paths]
    for depth in range(1, 64):
        clash = {n for n in names if names.count(n) > 1}
        if not clash:
            break
        names = ["_".join([*p.parent.parts[-depth:], _base_name(p)]) if n in clash else n
                 for p, n in zip(paths, names)]
    return names


def read_raw_scan(path: Path, columns: Optional[list[str]] = None, label_field: str = "label") -> dict:
    """{"coord" float32 [P, 3] local frame, "origin" [3] metres, optional "color" uint8 [P, 3] /
    "normal" float32 [P, 3] / "remission" float32 [P], "raw_labels" int64 [P] or None, "format"}
    of one scan (module docstring for which reader)."""
    from datasets.label_values import integer_labels
    from datasets.local_frame import to_local_float32

    path = Path(path)
    if path.name.endswith(SCANNET_MESH):
        from datasets import scannet
        raw_coord, color = scannet.read_mesh(path)
        coord, origin = to_local_float32(raw_coord, path)
        label_path = scannet.labels_file(path)
        raw = scannet.read_mesh_labels(label_path, raw_coord, path.name) if label_path.is_file() else None
        return {"coord": coord, "origin": origin, "color": color, "raw_labels": raw, "format": "scannet"}
    if path.suffix == ".bin":
        from datasets import semantickitti
        points = semantickitti.read_frame(path)
        label_path = semantickitti.frame_labels_file(path)
        raw = None
        if label_path.is_file():
            raw = (semantickitti.read_label_words(label_path, len(points)) & 0xFFFF).astype(np.int64)
        return {"coord": np.ascontiguousarray(points[:, :3]), "origin": [0.0, 0.0, 0.0],
                "remission": np.ascontiguousarray(points[:, 3]), "raw_labels": raw, "format": "semantickitti"}
    from datasets.folder import read_point_file
    arrays, origin, raw = read_point_file(path, columns, label_field)
    if raw is not None:
        raw = integer_labels(raw, path, label_field).astype(np.int64)
    return {**arrays, "origin": origin, "raw_labels": raw, "format": path.suffix.lower().lstrip(".")}


def map_label_values(raw: np.ndarray, label_values: list[list[int]]) -> tuple[np.ndarray, dict[int, int]]:
    """Raw label values int64 [P] -> (class index int64 [P], {value the classes do not name: count});
    those values become IGNORE_INDEX (ignored ids of the training data, such as 0 = unannotated)."""
    lookup = {int(v): k for k, values in enumerate(label_values) for v in values}
    values, inverse = np.unique(raw, return_inverse=True)
    classes = np.array([lookup.get(int(v), IGNORE_INDEX) for v in values], dtype=np.int64)
    unknown = {int(v): 0 for v in values if int(v) not in lookup}
    if unknown:
        counts = np.bincount(inverse.reshape(-1), minlength=len(values))
        unknown = {int(v): int(counts[i]) for i, v in enumerate(values) if int(v) not in lookup}
    return classes[inverse.reshape(-1)], unknown


def check_inputs(path: Path, scan: dict, features: list[str]) -> None:
    """DataFormatError naming the file, what it lacks and what the model reads, when a feature the
    model was trained on cannot be computed from this scan."""
    missing = [what for name, (key, what) in _NEEDS.items() if name in features and key not in scan]
    if missing:
        raise DataFormatError(path, f"has no {' or '.join(missing)}, but the model was trained on features "
                                    f"{', '.join(features)} (a scan with those values is needed)")


def meta_from_card(card: dict) -> DatasetMeta:
    """The DatasetMeta of a model card (lib/engine/model_card.py): names, palette, ids, convention."""
    return DatasetMeta(name=card["dataset"], class_names=list(card["class_names"]), in_channels=int(card["in_channels"]),
                       palette=np.array(card["palette"], dtype=np.uint8).reshape(-1, 3),
                       raw_ids=np.array(card["raw_ids"], dtype=np.int64), benchmark=card["benchmark"],
                       convention=card["convention"], label_values=card["label_values"],
                       label_field=card.get("label_field", "label"), columns=card.get("columns"))


class ScanDataset(VoxelDataset):
    """Scans `paths` as a VoxelDataset under the card's voxel size and features: mean quantization,
    no augmentation (items and get_view as for any dataset, so test-time views work unchanged).

    `records[i]` is filled when scan i is first read: format, origin, points, labelled, and the
    counts of label values no class names (ignored in scoring, e.g. 0 = unannotated)."""

    def __init__(self, paths: list[Path], card: dict, data_cfg, columns: Optional[list[str]] = None):
        import dataclasses
        cfg = dataclasses.replace(data_cfg, voxel_size=float(card["voxel_size"]), quantization="mean")
        self.paths = [Path(p) for p in paths]
        self.card = card
        self.columns = columns or card.get("columns")
        self.records = [None] * len(self.paths)
        self._cache = (None, None)  # (index, scene): test-time views read a scan once
        names = scan_names(self.paths)
        super().__init__(Path("."), {}, names, meta_from_card(card), cfg, list(card["features"]), augment=False)

    def read(self, index: int) -> dict:
        """The scene dict of scan `index` (coord, label, and the features' arrays), cached."""
        if self._cache[0] == index:
            return self._cache[1]
        path = self.paths[index]
        scan = read_raw_scan(path, self.columns, self.meta.label_field)
        check_inputs(path, scan, self.features)
        raw = scan.pop("raw_labels")
        if raw is None:
            label, unknown = np.full(len(scan["coord"]), IGNORE_INDEX, dtype=np.int64), {}
        else:
            label, unknown = map_label_values(raw, self.meta.values_of_classes())
        self.records[index] = {"file": str(path), "format": scan.pop("format"), "origin": scan.pop("origin"),
                               "points": int(len(label)), "labelled": raw is not None,
                               "unscored_label_values": {str(k): v for k, v in unknown.items()}}
        scene = dict(scan, label=label)
        self._cache = (index, scene)
        return scene

    def load_scene(self, scene_id: str) -> dict:
        return self.read(self.scene_ids.index(scene_id))
