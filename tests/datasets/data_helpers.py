"""Helpers of the data-pipeline tests: paths of the real scans, writers of small raw trees.

(A module with its own name: `from conftest import ...` would pick whichever conftest.py was
imported first when the whole suite runs.)"""
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import REAL_DATA as REAL

REAL_SCANNET = REAL / "scannet"
REAL_KITTI = REAL / "semantickitti"

needs_real_scannet = pytest.mark.skipif(not REAL_SCANNET.is_dir(), reason=f"real ScanNet scans not found at {REAL_SCANNET}")
needs_real_kitti = pytest.mark.skipif(not REAL_KITTI.is_dir(), reason=f"real SemanticKITTI frames not found at {REAL_KITTI}")


def write_ply(path: Path, columns: dict, text: bool = False) -> None:
    """A PLY with one 'vertex' element holding `columns` (name -> 1-D array), via plyfile."""
    from plyfile import PlyData, PlyElement

    n = len(next(iter(columns.values())))
    data = np.empty(n, dtype=[(k, np.asarray(v).dtype) for k, v in columns.items()])
    for k, v in columns.items():
        data[k] = v
    path.parent.mkdir(parents=True, exist_ok=True)
    PlyData([PlyElement.describe(data, "vertex")], text=text).write(str(path))


def make_scannet_tree(root: Path, scenes: dict, splits: dict = None) -> Path:
    """Official-layout ScanNet tree: scenes = {scene: (xyz [P,3] float32, rgb [P,3] uint8, nyu40 [P])}."""
    for name, (xyz, rgb, labels) in scenes.items():
        folder = root / "scans" / name
        cols = {"x": xyz[:, 0].astype(np.float32), "y": xyz[:, 1].astype(np.float32),
                "z": xyz[:, 2].astype(np.float32), "red": rgb[:, 0], "green": rgb[:, 1], "blue": rgb[:, 2],
                "alpha": np.full(len(xyz), 255, np.uint8)}
        write_ply(folder / f"{name}_vh_clean_2.ply", cols)
        if labels is not None:
            write_ply(folder / f"{name}_vh_clean_2.labels.ply", dict(cols, label=np.asarray(labels, np.uint16)))
    splits = splits or {"train": list(scenes), "val": []}
    for split, names in splits.items():
        (root / f"scannetv2_{split}.txt").write_text("".join(f"{n}\n" for n in names))
    return root


def random_scene(n: int = 200, seed: int = 0):
    rng = np.random.default_rng(seed)
    xyz = rng.random((n, 3)).astype(np.float32) * 2
    rgb = rng.integers(0, 256, (n, 3)).astype(np.uint8)
    labels = rng.choice([0, 1, 2, 3, 5, 13, 39, 40], size=n).astype(np.uint16)
    return xyz, rgb, labels


def preprocessed_rooms(tmp: Path) -> Path:
    """Three small random ScanNet-layout rooms (two train, one val) preprocessed into tmp/pre."""
    from datasets.preprocessing import preprocess

    rooms = {}
    for i in range(3):
        xyz, rgb, labels = random_scene(400, i)
        rooms[f"scene000{i}_00"] = (xyz * 1.5, rgb, labels)
    raw = make_scannet_tree(tmp / "raw", rooms, {"train": ["scene0000_00", "scene0001_00"], "val": ["scene0002_00"]})
    preprocess("scannet", raw, tmp / "pre", workers=1, progress=False)
    return tmp / "pre"


def tree_bytes(root: Path) -> dict:
    """Relative path -> bytes of every file under `root` (to compare two generated trees)."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def preprocess_fails(name: str, raw: Path, tmp_path: Path, match: str, path_part: str) -> str:
    """Strict preprocessing of `raw` must raise one DataFormatError line holding `path_part` and `match`."""
    from datasets.errors import DataFormatError
    from datasets.preprocessing import preprocess

    with pytest.raises(DataFormatError) as err:
        preprocess(name, raw, tmp_path / "out", workers=1, progress=False)
    message = str(err.value)
    assert "\n" not in message and path_part in message and match in message, message
    return message


def skip_counted(name: str, raw: Path, tmp_path: Path, scene: str) -> dict:
    """Lenient preprocessing of `raw` skips `scene`, counts it, and writes the same count to manifest.json."""
    import json

    from datasets.preprocessing import preprocess

    manifest = preprocess(name, raw, tmp_path / "out_lenient", workers=1, strict=False, progress=False)
    assert scene in manifest["skipped"] and scene not in manifest["scenes"]
    on_disk = json.loads((tmp_path / "out_lenient" / "manifest.json").read_text())
    assert on_disk["skipped"] == manifest["skipped"]
    return manifest


def damage_stored(out: Path, scene: str, array: str, index: int, value) -> None:
    """Set row `index` of <out>/scenes/<scene>/<array>.npy to `value`: a preprocessed file changed
    afterwards (or written by an older preprocessing without today's checks)."""
    path = out / "scenes" / scene / f"{array}.npy"
    data = np.load(path)
    data[index] = value
    np.save(path, data)
