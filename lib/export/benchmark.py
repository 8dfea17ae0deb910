"""Official benchmark submission files: ScanNet `<scene>.txt`, SemanticKITTI `.label`."""
import re
from pathlib import Path

import numpy as np


def class_to_raw(pred: np.ndarray, raw_ids: np.ndarray, where: str) -> np.ndarray:
    """Class indices [P] -> official ids [P] (raw_ids[pred]); a class outside [0, K) is an error."""
    pred = np.asarray(pred).astype(np.int64).reshape(-1)
    raw_ids = np.asarray(raw_ids).astype(np.int64)
    if raw_ids.size == 0:
        raise ValueError(f"{where}: the dataset meta has no raw_ids, so no official ids can be written")
    bad = (pred < 0) | (pred >= raw_ids.size)
    if bad.any():
        raise ValueError(f"{where}: {int(bad.sum())} predictions outside [0, {raw_ids.size}) "
                         f"(first {int(pred[bad][0])}); benchmark files need a valid class per point")
    return raw_ids[pred]


def write_scannet(out_dir: str | Path, scene: str, pred: np.ndarray, raw_ids: np.ndarray) -> Path:
    """`<out_dir>/<scene>.txt`: one NYU40 id per line, one line per vertex of `<scene>_vh_clean_2.ply`.

    That folder is what ScanNet's evaluate_semantic_label.py takes as --pred_path. `pred` must
    hold one class per ORIGINAL vertex, in the file's vertex order.
    """
    path = Path(out_dir) / f"{scene}.txt"
    ids = class_to_raw(pred, raw_ids, str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savetxt(path, ids, fmt="%d")
    return path


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


def write_semantickitti(out_dir: str | Path, scene: str, pred: np.ndarray, raw_ids: np.ndarray,
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
