"""The folder dataset on a small folder of mixed PLY / NPY / TXT / CSV scenes written here: labels
mapped through classes.yaml, training, testing and PLY export through the normal entry, and bad
files reported in one line naming the file."""
import json

import numpy as np
import pytest

from data_helpers import write_ply
from datasets.errors import DataFormatError
from datasets.preprocessing import preprocess
from lib import IGNORE_INDEX as IGN

CLASSES = """\
classes:
  - {name: ground, color: [140, 110, 80], ids: [1, 7]}
  - {name: box, ids: [2]}
  - name: pole
    ids: [3]
ignore: [0]
"""
# label value in the files -> class index, by hand from CLASSES
EXPECTED = {0: IGN, 1: 0, 7: 0, 2: 1, 3: 2}


def _scene(seed, n=400):
    """xyz metres (a 4 m x 4 m floor with a box and a pole), rgb 0..255, label values."""
    rng = np.random.default_rng(seed)
    xyz = rng.random((n, 3)) * [4.0, 4.0, 0.05]
    label = rng.choice([1, 7], n)
    box = rng.random(n) < 0.3
    xyz[box] = rng.random((box.sum(), 3)) * [1.0, 1.0, 1.0] + [1.0, 1.0, 0.0]
    label[box] = 2
    pole = rng.random(n) < 0.1
    xyz[pole] = rng.random((pole.sum(), 3)) * [0.2, 0.2, 2.0] + [3.0, 3.0, 0.0]
    label[pole] = 3
    label[:5] = 0
    rgb = np.zeros((n, 3), np.int64)
    rgb[:, 0] = 40 + 100 * (label == 2)
    rgb[:, 1] = 40 + 150 * (label == 3)
    rgb[:, 2] = 200 * np.isin(label, (1, 7))
    return xyz.astype(np.float32), rgb, label


def _table(xyz, rgb, label=None):
    columns = [xyz, rgb] + ([label[:, None]] if label is not None else [])
    return np.concatenate(columns, axis=1)


def write_folder(root, *, extra_classes=""):
    """train: a.ply, b.npy, c.txt; val: d.csv; test: e.txt without labels. Returns {scene: (xyz, rgb, label)}."""
    (root / "classes.yaml").parent.mkdir(parents=True, exist_ok=True)
    (root / "classes.yaml").write_text(CLASSES + extra_classes)
    scenes = {name: _scene(i) for i, name in enumerate("abcde")}
    xyz, rgb, label = scenes["a"]
    write_ply(root / "train" / "a.ply", {"x": xyz[:, 0], "y": xyz[:, 1], "z": xyz[:, 2],
                                         "red": rgb[:, 0].astype(np.uint8), "green": rgb[:, 1].astype(np.uint8),
                                         "blue": rgb[:, 2].astype(np.uint8), "label": label.astype(np.int32)})
    np.save(root / "train" / "b.npy", _table(*scenes["b"]).astype(np.float32))
    np.savetxt(root / "train" / "c.txt", _table(*scenes["c"]), fmt="%.6f")
    (root / "val").mkdir()
    np.savetxt(root / "val" / "d.csv", _table(*scenes["d"]), fmt="%.6f", delimiter=",", header="x,y,z,r,g,b,label")
    (root / "test").mkdir()
    np.savetxt(root / "test" / "e.txt", _table(*scenes["e"][:2]), fmt="%.6f")
    return scenes


def test_mixed_files_are_read_and_mapped_through_classes_yaml(tmp_path):
    import datasets
    from lib.config.schema_data import DataConfig

    scenes = write_folder(tmp_path / "raw")
    manifest = preprocess("folder", tmp_path / "raw", tmp_path / "out", progress=False)
    assert manifest["class_names"] == ["ground", "box", "pole"]
    assert {s: r["split"] for s, r in manifest["scenes"].items()} == {"a": "train", "b": "train", "c": "train",
                                                                       "d": "val", "e": "test"}
    for name, (_, _, label) in scenes.items():
        record = manifest["scenes"][name]
        if name == "e":
            assert record["ignored"] == record["points"] == len(label)
            continue
        classes = np.array([EXPECTED[int(v)] for v in label])
        assert record["class_counts"] == [int((classes == c).sum()) for c in range(3)]
        assert record["ignored"] == 5
    cfg = DataConfig(dataset="folder", root=str(tmp_path / "out"), voxel_size=0.1, augment_splits=[])
    train = datasets.build_dataset(cfg, "train")
    assert train.meta.in_channels == 3  # rgb: every scene has colour
    assert train.meta.palette[0].tolist() == [140, 110, 80] and train.meta.raw_ids.tolist() == [1, 2, 3]
    for index, name in enumerate(train.scene_ids):
        item = train[index]
        xyz, _, label = scenes[name]
        np.testing.assert_allclose(item["points"], xyz, atol=1e-5)  # the original points, in file order
        assert item["point_labels"].tolist() == [EXPECTED[int(v)] for v in label]


def test_train_test_and_export_ply_through_the_normal_entry(tmp_path):
    import datasets
    import models
    from plyfile import PlyData

    from datasets.collate import collate_fn
    from lib.config import load_config
    from lib.engine.launch import run

    scenes = write_folder(tmp_path / "raw")
    preprocess("folder", tmp_path / "raw", tmp_path / "out", progress=False)
    overrides = [f"data.root={tmp_path / 'out'}", "device=cpu", "engine=torch", "data.voxel_size=0.2",
                 "data.num_workers=0", "train.iterations=4", "train.val_every=0", "train.ckpt_every=0",
                 "train.progress=false", "train.cpu_threads=1", "eval.plots=false", "model.args={'bn_momentum': 0.1}",
                 "export.benchmark=true"]
    cfg = load_config("folder_example.yaml", overrides)
    summary = run(cfg, "train", tmp_path / "run", datasets.build_dataset, models.build_model, collate_fn)
    assert summary["iterations"] == 4 and summary["convention"] == "nan_absent"
    test = run(cfg, "test", tmp_path / "test", datasets.build_dataset, models.build_model, collate_fn,
               weights=tmp_path / "run" / "last.pth")
    assert set(test["metrics"]["per_class_iou"]) == {"ground", "box", "pole"}
    ply = PlyData.read(str(tmp_path / "test" / "predictions" / "ply" / "d.ply"))["vertex"].data
    xyz, _, label = scenes["d"]
    assert len(ply) == len(xyz)
    np.testing.assert_allclose(np.stack([ply["x"], ply["y"], ply["z"]], 1), xyz, atol=1e-5)
    assert ply["label"].tolist() == [EXPECTED[int(v)] for v in label]
    assert set(ply["pred"].tolist()) <= {0, 1, 2}
    ids = np.loadtxt(tmp_path / "test" / "predictions" / "labels" / "d.txt", dtype=np.int64)
    assert ids.tolist() == [[1, 2, 3][p] for p in ply["pred"]]  # the first label value of each class
    assert json.loads((tmp_path / "test" / "summary.json").read_text())["mode"] == "test"


def _one_line(exc_info, path):
    message = str(exc_info.value)
    assert "\n" not in message and message.startswith(str(path)), message
    return message


@pytest.mark.parametrize("fault, message", [
    ("no_label", "no label field 'label'"),
    ("unknown_id", r"label value\(s\) \[9\] are not in classes.yaml"),
    ("lengths", "399 labels for 400 points"),
    ("columns", "5 columns: name them with 'columns' in classes.yaml"),
    ("nan", "1 points with NaN/inf coordinates"),
])
def test_bad_files_are_named_in_one_line_or_skipped_and_counted(tmp_path, fault, message):
    write_folder(tmp_path / "raw")
    xyz, rgb, label = _scene(9)
    bad = tmp_path / "raw" / "train" / "bad.txt"
    if fault == "no_label":
        bad = bad.with_suffix(".ply")
        write_ply(bad, {"x": xyz[:, 0], "y": xyz[:, 1], "z": xyz[:, 2]})
    elif fault == "unknown_id":
        label[10] = 9
        np.savetxt(bad, _table(xyz, rgb, label))
    elif fault == "lengths":
        np.savetxt(bad, _table(xyz, rgb))
        np.savetxt(bad.with_suffix(".labels"), label[:-1], fmt="%d")
    elif fault == "columns":
        np.savetxt(bad, np.concatenate([xyz, label[:, None], label[:, None]], 1))
    else:
        xyz[3, 1] = np.nan
        np.savetxt(bad, _table(xyz, rgb, label))
    with pytest.raises(DataFormatError, match=message) as exc_info:
        preprocess("folder", tmp_path / "raw", tmp_path / "out", progress=False)
    _one_line(exc_info, bad)
    lenient = preprocess("folder", tmp_path / "raw", tmp_path / "lenient", strict=False, progress=False)
    assert list(lenient["skipped"]) == ["bad"] and set(lenient["scenes"]) == set("abcde")


def test_classes_yaml_errors_name_the_key(tmp_path):
    write_folder(tmp_path / "raw", extra_classes="ignor: [5]\n")
    with pytest.raises(DataFormatError, match="unknown key 'ignor'; did you mean 'ignore'") as exc_info:
        preprocess("folder", tmp_path / "raw", tmp_path / "out", progress=False)
    _one_line(exc_info, tmp_path / "raw" / "classes.yaml")
    (tmp_path / "raw" / "classes.yaml").write_text(CLASSES.replace("ids: [3]", "ids: [2]"))
    with pytest.raises(DataFormatError, match="label value 2 is claimed twice"):
        preprocess("folder", tmp_path / "raw", tmp_path / "out", progress=False)
    (tmp_path / "raw" / "classes.yaml").unlink()
    with pytest.raises(DataFormatError, match="missing classes.yaml"):
        preprocess("folder", tmp_path / "raw", tmp_path / "out", progress=False)


def test_split_files_and_normals_turn_with_the_view(tmp_path):
    import datasets
    from lib.config.schema_data import DataConfig

    root = tmp_path / "raw"
    (root / "scenes").mkdir(parents=True)
    (root / "classes.yaml").write_text("classes: [floor, wall]\ncolumns: [x, y, z, nx, ny, nz, label]\n")
    rng = np.random.default_rng(0)
    xyz = rng.random((300, 3)) * 3
    normal = np.tile([1.0, 0.0, 0.0], (300, 1))
    label = (xyz[:, 2] > 1.5).astype(np.int64)  # ids default to the class index
    np.save(root / "scenes" / "s1.npy", np.concatenate([xyz, normal, label[:, None]], 1))
    (root / "splits").mkdir()
    (root / "splits" / "train.txt").write_text("scenes/s1.npy\n")
    manifest = preprocess("folder", root, tmp_path / "out", progress=False)
    assert manifest["scenes"]["s1"]["split"] == "train" and manifest["scenes"]["s1"]["normal"]
    cfg = DataConfig(dataset="folder", root=str(tmp_path / "out"), voxel_size=0.3, features=["normal", "ones"])
    ds = datasets.build_dataset(cfg, "train")
    assert ds.meta.in_channels == 4 and ds.meta.class_names == ["floor", "wall"]
    view = ds.get_view(0, rotation_z=np.pi / 2)
    np.testing.assert_allclose(view["feats"][:, :3], np.tile([0.0, 1.0, 0.0], (len(view["feats"]), 1)), atol=1e-6)
    with pytest.raises(ValueError, match="dataset 'folder' has no 'rgb'"):
        datasets.build_dataset(DataConfig(dataset="folder", root=str(tmp_path / "out"), features=["rgb"]), "train")


def test_synthetic_folder_is_deterministic_and_reads_back(tmp_path):
    from data_helpers import tree_bytes
    from datasets.synthetic import generate
    from datasets.synthetic.scannet import make_scene

    out = generate("folder", tmp_path / "a", 3, seed=4, points_per_scene=1000)
    assert sorted(p.name for p in out.rglob("room*")) == ["room0000.ply", "room0001.npy", "room0002.txt"]
    assert tree_bytes(generate("folder", tmp_path / "b", 3, seed=4, points_per_scene=1000)) == tree_bytes(out)
    manifest = preprocess("folder", out, tmp_path / "out", progress=False)
    _, _, nyu40 = make_scene(4, 1, 1000)  # the val room, as NYU40 ids
    groups = [[1], [2], [3, 4, 5, 6, 7, 10, 12, 14, 24, 39], [8, 9, 11, 16, 28], [33, 34, 36]]  # classes.yaml
    assert manifest["scenes"]["room0001"]["class_counts"] == [int(np.isin(nyu40, g).sum()) for g in groups]
    assert manifest["scenes"]["room0001"]["ignored"] == int(np.isin(nyu40, [0, 50]).sum())
    assert manifest["scenes"]["room0002"]["split"] == "test" and manifest["scenes"]["room0002"]["ignored"] == 1000
