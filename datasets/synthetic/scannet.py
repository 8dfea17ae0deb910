"""Synthetic rooms in the ScanNet v2 layout.

  OUT/scans/<scene>/<scene>_vh_clean_2.ply          binary little-endian PLY, vertex x, y, z float32,
                                                    red, green, blue, alpha uint8 (no faces)
  OUT/scans/<scene>/<scene>_vh_clean_2.labels.ply   the same vertices plus `label` uint16 (NYU40 id)
  OUT/scans_test/<scene>/<scene>_vh_clean_2.ply     test scenes, without labels (as in the release)
  OUT/scannetv2_{train,val,test}.txt                scene ids per split
Rooms are studio flats (datasets/synthetic/rooms.py) without ceiling, as ScanNet scans have almost
none. As in real files, a few vertices are unannotated (label 0) and a small object carries an id
outside NYU40 (50).
"""
from pathlib import Path

import numpy as np

from . import rooms
from .atomic import atomic_write, atomic_write_text
from .scan import scan_room
from .scenes import SPLIT_CYCLE, scene_rng, split_of

NYU40_OF_KIND = {"wall": 1, "floor": 2, "cabinet": 3, "bed": 4, "chair": 5, "sofa": 6, "table": 7, "door": 8,
                 "window": 9, "bookshelf": 10, "picture": 11, "counter": 12, "desk": 14, "curtain": 16,
                 "refrigerator": 24, "shower_curtain": 28, "toilet": 33, "sink": 34, "bathtub": 36,
                 "otherfurniture": 39, "misc": 50}
UNANNOTATED = 0


def scene_name(index: int) -> str:
    return f"scene{index:04d}_00"


def make_scene(seed: int, index: int, points_per_scene: int):
    """(xyz float32 [P, 3] metres, rgb uint8 [P, 3], NYU40 label uint16 [P]) of scene `index`."""
    rng = scene_rng(seed, "scannet", index)
    pieces, size = rooms.studio_room(rng, ceiling=False)
    scan = scan_room(rng, pieces, size, points_per_scene, rooms.COLOURS)
    label = np.array([NYU40_OF_KIND[k] for k in scan.kinds], np.uint16)[scan.piece]
    # unannotated patches: small blobs on walls/floor left without a label, as annotators do
    structural = np.flatnonzero(np.isin(label, (1, 2)))
    for centre in scan.xyz[rng.choice(structural, 2)]:
        label[((scan.xyz - centre) ** 2).sum(1) < 0.12 ** 2] = UNANNOTATED
    return scan.xyz, scan.rgb, label


def write_vertex_ply(path: Path, xyz, rgb, label=None, alpha: bool = True):
    """Binary little-endian PLY of float32 x y z [N, 3] (metres), uint8 red green blue [N, 3], an
    opaque uint8 alpha (as ScanNet's meshes carry) when `alpha`, and uint16 label [N] when given."""
    from plyfile import PlyData, PlyElement

    fields = [("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("red", "u1"), ("green", "u1"), ("blue", "u1")]
    fields += ([("alpha", "u1")] if alpha else []) + ([("label", "<u2")] if label is not None else [])
    vertex = np.empty(len(xyz), dtype=fields)
    for k, name in enumerate("xyz"):
        vertex[name] = xyz[:, k]
    for k, name in enumerate(("red", "green", "blue")):
        vertex[name] = rgb[:, k]
    if alpha:
        vertex["alpha"] = 255
    if label is not None:
        vertex["label"] = label
    ply = PlyData([PlyElement.describe(vertex, "vertex")], text=False, byte_order="<")
    atomic_write(path, lambda tmp: ply.write(str(tmp)))


def generate(out_dir, num_scenes: int, seed: int = 0, points_per_scene: int = 30000) -> Path:
    """Write `num_scenes` rooms (split by index, see scenes.SPLIT_CYCLE); only missing files are written."""
    if points_per_scene < 1000:
        raise ValueError(f"points_per_scene must be >= 1000, got {points_per_scene}")
    out = Path(out_dir)
    names = {split: [] for split in dict.fromkeys(SPLIT_CYCLE)}
    for index in range(num_scenes):
        split, name = split_of(index), scene_name(index)
        names[split].append(name)
        folder = out / ("scans_test" if split == "test" else "scans") / name
        mesh, labels = folder / f"{name}_vh_clean_2.ply", folder / f"{name}_vh_clean_2.labels.ply"
        if mesh.is_file() and (split == "test" or labels.is_file()):
            continue
        xyz, rgb, label = make_scene(seed, index, points_per_scene)
        if split != "test" and not labels.is_file():
            write_vertex_ply(labels, xyz, rgb, label)
        if not mesh.is_file():
            write_vertex_ply(mesh, xyz, rgb)
    for split, scene_names in names.items():
        atomic_write_text(out / f"scannetv2_{split}.txt", "".join(f"{n}\n" for n in scene_names))
    return out
