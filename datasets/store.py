"""The preprocessed layout: one folder of .npy arrays per scene, plus OUT/manifest.json.

OUT/manifest.json                 {"dataset", "num_classes", "class_names", "scenes": {...}, "skipped": {...},
                                   "unlabelled": [...]}; a scene entry's "origin" (metres) is added
                                   to the stored coordinates to give the raw ones
OUT/scenes/<scene id>/scene.json  the scene's manifest entry (lets a re-run skip finished scenes); its
                                   "inputs" is the fingerprint of the raw files it was made from
OUT/scenes/<scene id>/coord.npy   float32 [P, 3] metres
OUT/scenes/<scene id>/color.npy   uint8 [P, 3] RGB (datasets with colour)
OUT/scenes/<scene id>/label.npy   int16 [P] class index, IGNORE_INDEX where unknown
A scene folder is written under a temporary name and renamed when complete, so a killed run leaves
no half scene; the manifest is replaced atomically too.
"""
import json
import os
import shutil
from pathlib import Path

import numpy as np

from datasets.errors import DataFormatError
from lib.errors import naming_disk_full
from lib.io import atomic_write_json

MANIFEST = "manifest.json"
SCENE_JSON = "scene.json"
TMP_PREFIX = ".tmp_"


def scene_dir(root: Path, scene_id: str) -> Path:
    return Path(root) / "scenes" / scene_id


def inputs_fingerprint(paths) -> str:
    """A digest of the (path, size, modification time) of every file in `paths` ("absent" for a
    missing one): a raw scene's files replaced or edited since a scene was written change it."""
    import hashlib

    digest = hashlib.sha1()
    for path in paths:
        try:
            st = os.stat(path)
            digest.update(f"{path}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        except FileNotFoundError:
            digest.update(f"{path}\0absent\n".encode())
    return digest.hexdigest()


def finished_record(root: Path, scene_id: str):
    """The manifest entry of a completely written scene, or None."""
    path = scene_dir(root, scene_id) / SCENE_JSON
    if not path.is_file():
        return None
    with open(path) as f:
        return json.load(f)


def write_scene(root: Path, scene_id: str, arrays: dict[str, np.ndarray], record: dict) -> None:
    """Write `arrays` (name -> array) and `record` as scene `scene_id`, atomically."""
    final = scene_dir(root, scene_id)
    tmp = final.parent / f"{TMP_PREFIX}{scene_id}_{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        for name, array in arrays.items():
            with naming_disk_full(final / f"{name}.npy"):
                np.save(tmp / f"{name}.npy", np.ascontiguousarray(array))
        with naming_disk_full(final / SCENE_JSON), open(tmp / SCENE_JSON, "w") as f:
            json.dump(record, f)
    except BaseException:  # a full disk (or a kill) leaves no half scene behind
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    try:
        os.rename(tmp, final)
    except OSError:  # the folder exists: a scene being redone (its raw files changed), or a leftover
        old = final.parent / f"{TMP_PREFIX}old_{scene_id}_{os.getpid()}"
        os.rename(final, old)  # the complete new folder replaces it, then the old one goes
        os.rename(tmp, final)
        shutil.rmtree(old)


def remove_stale_tmp(root: Path) -> int:
    """Delete folders left by killed runs; returns how many."""
    scenes = Path(root) / "scenes"
    if not scenes.is_dir():
        return 0
    stale = [p for p in scenes.iterdir() if p.name.startswith(TMP_PREFIX)]
    for p in stale:
        shutil.rmtree(p, ignore_errors=True)
    return len(stale)


def load_array(root: Path, scene_id: str, name: str, mmap: bool = True) -> np.ndarray:
    path = scene_dir(root, scene_id) / f"{name}.npy"
    try:
        return np.load(path, mmap_mode="r" if mmap else None)
    except FileNotFoundError:
        raise DataFormatError(path, "missing array of a preprocessed scene (re-run scripts/preprocess.py)") from None
    except ValueError as exc:
        raise DataFormatError(path, f"unreadable .npy ({exc})") from None


def write_json_atomic(path: Path, obj) -> None:
    """The manifest, written atomically by lib.io (a full disk names `path`)."""
    atomic_write_json(path, obj)


def read_manifest(root: Path) -> dict:
    path = Path(root) / MANIFEST
    try:
        with open(path) as f:
            manifest = json.load(f)
    except FileNotFoundError:
        raise DataFormatError(path, "missing manifest (run scripts/preprocess.py into this folder)") from None
    except json.JSONDecodeError as exc:
        raise DataFormatError(path, f"corrupt manifest ({exc})") from None
    for key in ("dataset", "num_classes", "class_names", "scenes"):
        if key not in manifest:
            raise DataFormatError(path, f"manifest lacks key '{key}'")
    return manifest
