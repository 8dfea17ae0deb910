"""The folder dataset gets the same bad-input care as the official readers: colours scaled by their
stored type, float64 coordinates far from 0 kept to the centimetre through a local origin, a stray
point rejected at preprocessing and at voxelization, PLY data beyond the header's counts, a scene in
two split files, a key given twice in classes.yaml, and scenes of labelled splits without a labelled point listed under 'unlabelled'."""
import numpy as np
import pytest

from data_helpers import damage_stored, write_ply
from datasets.errors import DataFormatError
from datasets.preprocessing import preprocess

CLASSES = "classes: [floor, wall]\nignore: [9]\n"


def _root(tmp_path, classes=CLASSES):
    root = tmp_path / "raw"
    (root / "train").mkdir(parents=True)
    (root / "classes.yaml").write_text(classes)
    return root


def _scene(n=60, seed=0):
    """xyz float64 metres on a centimetre grid, rgb uint8, labels 0/1."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 300, (n, 3)) * 0.01, rng.integers(0, 256, (n, 3)).astype(np.uint8), rng.integers(0, 2, n)


def _ply_columns(xyz, colour_columns, label):
    return {"x": xyz[:, 0].astype(np.float32), "y": xyz[:, 1].astype(np.float32), "z": xyz[:, 2].astype(np.float32),
            "red": colour_columns[0], "green": colour_columns[1], "blue": colour_columns[2], "label": label}


def _stored(out, scene, name):
    return np.load(out / "scenes" / scene / f"{name}.npy")


def _fails(root, tmp_path, path, *parts):
    with pytest.raises(DataFormatError) as err:
        preprocess("folder", root, tmp_path / "out", progress=False)
    message = str(err.value)
    assert "\n" not in message and message.startswith(str(path)), message
    for part in parts:
        assert part in message, message
    return message


def test_colours_are_scaled_by_their_stored_type(tmp_path):
    root = _root(tmp_path)
    xyz, rgb, label = _scene()
    sixteen = [rgb[:, i].astype(np.uint16) * 257 for i in range(3)]  # 16-bit: 255 -> 65535
    write_ply(root / "train" / "a.ply", _ply_columns(xyz, sixteen, label.astype(np.int32)))
    table = np.zeros(len(xyz), dtype=[("x", "f8"), ("y", "f8"), ("z", "f8"), ("red", "f4"), ("green", "f4"),
                                       ("blue", "f4"), ("label", "i4")])
    for i, axis in enumerate("xyz"):
        table[axis] = xyz[:, i]
    for i, channel in enumerate(("red", "green", "blue")):
        table[channel] = rgb[:, i] / 255.0  # float 0..1
    table["label"] = label
    np.save(root / "train" / "b.npy", table)
    preprocess("folder", root, tmp_path / "out", progress=False)
    for scene in ("a", "b"):
        stored = _stored(tmp_path / "out", scene, "color")
        assert stored.dtype == np.uint8 and np.array_equal(stored, rgb), scene


def test_colours_outside_any_scale_are_an_error(tmp_path):
    root = _root(tmp_path)
    xyz, rgb, label = _scene()
    table = np.concatenate([xyz, rgb, label[:, None]], axis=1)
    table[4, 4] = 300.0
    np.savetxt(root / "train" / "a.txt", table, fmt="%.2f")
    _fails(root, tmp_path, root / "train" / "a.txt", "colours (red, green, blue, float64) outside")


def test_float64_coordinates_far_away_keep_their_centimetres(tmp_path):
    root = _root(tmp_path)
    xyz, rgb, label = _scene(200)
    far = xyz + [512_345.67, 5_412_345.89, 123.0]  # UTM-like eastings / northings
    np.savetxt(root / "train" / "far.txt", np.concatenate([far, rgb, label[:, None]], axis=1), fmt="%.2f")
    np.savetxt(root / "train" / "near.txt", np.concatenate([xyz, rgb, label[:, None]], axis=1), fmt="%.2f")
    manifest = preprocess("folder", root, tmp_path / "out", progress=False)
    written = np.loadtxt(root / "train" / "far.txt")[:, :3]  # what the file holds, read as float64
    origin = np.array(manifest["scenes"]["far"]["origin"])
    local = _stored(tmp_path / "out", "far", "coord")
    assert local.dtype == np.float32 and np.abs(local).max() < 10
    assert np.abs(local.astype(np.float64) + origin - written).max() < 1e-4
    assert np.abs(written.astype(np.float32).astype(np.float64) - written).max() > 0.1  # a plain cast loses them
    assert manifest["scenes"]["near"]["origin"] == [0.0, 0.0, 0.0]
    near = np.loadtxt(root / "train" / "near.txt")[:, :3]
    assert np.array_equal(_stored(tmp_path / "out", "near", "coord"), near.astype(np.float32))


def test_a_stray_point_far_away_rejects_the_scene(tmp_path):
    root = _root(tmp_path)
    xyz, rgb, label = _scene()
    xyz[11, 2] = 1e9
    np.save(root / "train" / "stray.npy", np.concatenate([xyz, rgb, label[:, None]], axis=1))
    np.save(root / "train" / "fine.npy", np.concatenate([*_scene(seed=1)[:2], _scene(seed=1)[2][:, None]], axis=1))
    _fails(root, tmp_path, root / "train" / "stray.npy", "along z", "1 point(s) lie more than 5000 m from the median")
    lenient = preprocess("folder", root, tmp_path / "lenient", strict=False, progress=False)
    assert list(lenient["skipped"]) == ["stray"] and list(lenient["scenes"]) == ["fine"]


def test_stray_point_in_a_stored_scene_names_the_scene(tmp_path):
    import datasets
    from lib.config.schema_data import DataConfig

    root = _root(tmp_path)
    xyz, rgb, label = _scene()
    np.save(root / "train" / "a.npy", np.concatenate([xyz, rgb, label[:, None]], axis=1))
    out = tmp_path / "out"
    preprocess("folder", root, out, progress=False)
    damage_stored(out, "a", "coord", 3, 1e5)  # as an older preprocessing without the extent check wrote it
    ds = datasets.build_dataset(DataConfig(dataset="folder", root=str(out), voxel_size=0.02), "train")
    with pytest.raises(DataFormatError, match="folder scene a: points span .* voxels .* along x"):
        ds[0]


def test_ply_header_declaring_fewer_vertices_is_an_error(tmp_path):
    root = _root(tmp_path)
    xyz, rgb, label = _scene(20)
    path = root / "train" / "a.ply"
    write_ply(path, _ply_columns(xyz, [rgb[:, i] for i in range(3)], label.astype(np.int32)))
    data = path.read_bytes()
    path.write_bytes(data.replace(b"element vertex 20\n", b"element vertex 17\n"))
    row = 3 * 4 + 3 + 4  # float32 x, y, z; uchar r, g, b; int32 label
    _fails(root, tmp_path, path, f"more data than its header declares: {3 * row} bytes after the 17 vertex")


def test_scene_in_two_split_files_names_both(tmp_path):
    root = _root(tmp_path)
    (root / "scenes").mkdir()
    xyz, rgb, label = _scene()
    np.save(root / "scenes" / "s1.npy", np.concatenate([xyz, rgb, label[:, None]], axis=1))
    np.save(root / "scenes" / "s2.npy", np.concatenate([xyz, rgb, label[:, None]], axis=1))
    (root / "splits").mkdir()
    (root / "splits" / "train.txt").write_text("scenes/s1.npy\nscenes/s2.npy\n")
    (root / "splits" / "val.txt").write_text("scenes/s2.npy\n")
    message = _fails(root, tmp_path, root / "splits" / "val.txt", "scene 's2' is also in split 'train'",
                     "a scene belongs to one split")
    assert str(root / "splits" / "train.txt") in message


def test_unlabelled_training_scenes_are_listed_and_unlabelled_splits_come_from_classes_yaml(tmp_path):
    root = _root(tmp_path, CLASSES + "unlabeled_splits: [test, extra]\n")
    xyz, rgb, label = _scene()
    np.savetxt(root / "train" / "a.txt", np.concatenate([xyz, rgb, label[:, None]], axis=1))
    np.savetxt(root / "train" / "b.txt", np.concatenate([xyz, rgb, np.full((len(xyz), 1), 9)], axis=1))  # all ignore
    (root / "extra").mkdir()
    np.savetxt(root / "extra" / "c.txt", np.concatenate([xyz, rgb], axis=1))  # no labels, as allowed
    with pytest.warns(UserWarning, match="1 scene\\(s\\) of labelled splits have no labelled point"):
        manifest = preprocess("folder", root, tmp_path / "out", progress=False)
    assert manifest["unlabelled"] == ["b"] and manifest["scenes"]["c"]["ignored"] == len(xyz)


def test_a_key_given_twice_in_classes_yaml_names_both_lines(tmp_path):
    root = _root(tmp_path, CLASSES + "ignore: [0]\n")
    xyz, rgb, label = _scene()
    np.savetxt(root / "train" / "a.txt", np.concatenate([xyz, rgb, label[:, None]], axis=1))
    _fails(root, tmp_path, root / "classes.yaml", "key 'ignore' is given twice (lines 2 and 3)")
