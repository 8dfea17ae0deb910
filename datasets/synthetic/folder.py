"""Synthetic rooms as a folder of mixed point files, the layout of the folder dataset (datasets/folder.py).

  OUT/classes.yaml                      5 classes over the NYU40 ids of the rooms, 0 and 50 ignored
  OUT/{train,val,test}/<scene>.<ext>    scene i in split scenes.split_of(i), written as .ply, .npy,
                                        .txt in turn (x, y, z, red, green, blue, label; no label in test)
The rooms are the ScanNet-layout rooms of datasets/synthetic/scannet.py.
"""
from pathlib import Path

import numpy as np

from .atomic import atomic_write, atomic_write_text
from .scannet import make_scene, write_vertex_ply
from .scenes import split_of

CLASSES_YAML = """\
# Classes of the synthetic folder example: the file labels are NYU40 ids, several per class.
classes:
  - {name: wall, color: [174, 199, 232], ids: [1]}
  - {name: floor, color: [152, 223, 138], ids: [2]}
  - {name: furniture, color: [31, 119, 180], ids: [3, 4, 5, 6, 7, 10, 12, 14, 24, 39]}
  - {name: opening, color: [214, 39, 40], ids: [8, 9, 11, 16, 28]}
  - {name: fixture, color: [44, 160, 44], ids: [33, 34, 36]}
ignore: [0, 50]
"""
FORMATS = (".ply", ".npy", ".txt")


def _write(path: Path, xyz, rgb, label) -> None:
    columns = [xyz.astype(np.float64), rgb.astype(np.float64)] + ([label[:, None].astype(np.float64)] if label is not None else [])
    table = np.concatenate(columns, axis=1)
    if path.suffix == ".npy":
        def save(tmp):
            with open(tmp, "wb") as f:  # a file object: np.save would add ".npy" to the temporary name
                np.save(f, table.astype(np.float32))
        atomic_write(path, save)
    elif path.suffix == ".txt":
        fmt = ["%.6f"] * 3 + ["%d"] * (table.shape[1] - 3)
        atomic_write(path, lambda tmp: np.savetxt(tmp, table, fmt=fmt))
    else:
        write_vertex_ply(path, xyz, rgb, label, alpha=False)


def generate(out_dir, num_scenes: int, seed: int = 0, points_per_scene: int = 30000) -> Path:
    """Write `num_scenes` rooms and classes.yaml; only missing files are written."""
    if points_per_scene < 1000:
        raise ValueError(f"points_per_scene must be >= 1000, got {points_per_scene}")
    out = Path(out_dir)
    for index in range(num_scenes):
        split = split_of(index)
        path = out / split / f"room{index:04d}{FORMATS[index % len(FORMATS)]}"
        if path.is_file():
            continue
        xyz, rgb, label = make_scene(seed, index, points_per_scene)
        _write(path, xyz, rgb, None if split == "test" else label)
    if num_scenes:
        atomic_write_text(out / "classes.yaml", CLASSES_YAML)
    return out
