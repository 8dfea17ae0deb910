"""Synthetic rooms in the S3DIS layout (Stanford3dDataset_v1.2_Aligned_Version).

  OUT/Area_N/<room>/<room>.txt                     all points of the room, lines `x y z r g b`
  OUT/Area_N/<room>/Annotations/<class>_<k>.txt    one file per object instance, same line format
xyz in metres with 6 decimals, rgb as integers. The room file is the concatenation of the
annotation files in the order the generator lists them (structure, then objects). Scene i goes to
Area_{i % 6 + 1}; room types cycle office, conferenceRoom, lounge, hallway; rooms of one area sit
side by side in the area's coordinate frame, as in the release. S3DIS has no split files: Area_5 is
the customary validation area.
"""
from pathlib import Path

import numpy as np

from . import rooms
from .atomic import atomic_write
from .scan import scan_room
from .scenes import scene_rng

CLASS_OF_KIND = {"ceiling": "ceiling", "floor": "floor", "wall": "wall", "beam": "beam", "column": "column",
                 "window": "window", "door": "door", "table": "table", "desk": "table", "chair": "chair",
                 "sofa": "sofa", "bookshelf": "bookcase", "board": "board", "stairs": "stairs"}
NUM_AREAS = 6
ROOM_SPACING = 16.0  # metres between the origins of neighbouring rooms in an area


def room_of(index: int) -> tuple[str, str, str]:
    """(area folder, room name, room type) of scene `index`."""
    area, slot = index % NUM_AREAS + 1, index // NUM_AREAS
    room_type = rooms.S3DIS_ROOM_TYPES[slot % len(rooms.S3DIS_ROOM_TYPES)]
    return f"Area_{area}", f"{room_type}_{slot // len(rooms.S3DIS_ROOM_TYPES) + 1}", room_type


def _lines(xyz: np.ndarray, rgb: np.ndarray) -> str:
    rows = [f"{x:.6f} {y:.6f} {z:.6f} {r} {g} {b}\n"
            for (x, y, z), (r, g, b) in zip(xyz.tolist(), rgb.tolist())]
    return "".join(rows)


def make_room(seed: int, index: int, points_per_scene: int) -> list[tuple[str, str]]:
    """[(annotation file name, its text)] of scene `index`, in room-file order."""
    rng = scene_rng(seed, "s3dis", index)
    _, _, room_type = room_of(index)
    pieces, size = rooms.s3dis_room(rng, room_type)
    scan = scan_room(rng, pieces, size, points_per_scene, rooms.COLOURS)
    offset = np.array([ROOM_SPACING * (index // NUM_AREAS), 0.0, 0.0]) + rng.uniform(0, 2, 3) * (1, 1, 0)
    xyz = scan.xyz.astype(np.float64) + offset
    files, counter = [], {}
    for pi, kind in enumerate(scan.kinds):
        mask = scan.piece == pi
        if not mask.any():
            continue
        name = CLASS_OF_KIND.get(kind, "clutter")
        counter[name] = counter.get(name, 0) + 1
        files.append((f"{name}_{counter[name]}.txt", _lines(xyz[mask], scan.rgb[mask])))
    return files


def generate(out_dir, num_scenes: int, seed: int = 0, points_per_scene: int = 30000) -> Path:
    """Write `num_scenes` rooms; a room whose <room>.txt exists (written last) is skipped."""
    if points_per_scene < 1000:
        raise ValueError(f"points_per_scene must be >= 1000, got {points_per_scene}")
    out = Path(out_dir)
    for index in range(num_scenes):
        area, room, _ = room_of(index)
        folder = out / area / room
        room_file = folder / f"{room}.txt"
        if room_file.is_file():
            continue
        files = make_room(seed, index, points_per_scene)
        for name, text in files:
            atomic_write(folder / "Annotations" / name, lambda tmp, t=text: tmp.write_text(t))
        atomic_write(room_file, lambda tmp: tmp.write_text("".join(t for _, t in files)))
    return out
