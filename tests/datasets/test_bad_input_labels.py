"""Label fields stored as floats: ids are taken only when every value is an integer (one rule,
datasets/label_values.py, for every reader whose format allows a float label field)."""
import numpy as np
import pytest

from data_helpers import preprocess_fails, random_scene, write_ply
from datasets.errors import DataFormatError
from datasets.label_values import integer_labels
from datasets.preprocessing import preprocess


def _scannet_tree(root, labels):
    xyz, rgb, _ = random_scene(len(labels))
    cols = {"x": xyz[:, 0], "y": xyz[:, 1], "z": xyz[:, 2]}
    folder = root / "scans" / "scene0000_00"
    write_ply(folder / "scene0000_00_vh_clean_2.ply", dict(cols, red=rgb[:, 0], green=rgb[:, 1], blue=rgb[:, 2]))
    write_ply(folder / "scene0000_00_vh_clean_2.labels.ply", dict(cols, label=labels))
    (root / "scannetv2_train.txt").write_text("scene0000_00\n")
    (root / "scannetv2_val.txt").write_text("")
    return root


def test_scannet_float_labels_that_are_not_ids_stop_naming_the_file(tmp_path):
    # 2 = floor written as 1.999 by an exporter: truncation would make it 1 = wall
    labels = np.array([2.0, 1.999, 3.0, 2.0001] * 25, dtype=np.float32)
    message = preprocess_fails("scannet", _scannet_tree(tmp_path / "raw", labels), tmp_path,
                               "50 non-integer value(s)", "scene0000_00_vh_clean_2.labels.ply")
    assert "1.999" in message


def test_scannet_float_labels_holding_integers_are_read_as_ids(tmp_path):
    ids = np.array([1, 2, 3, 5, 0] * 20)
    manifest = preprocess("scannet", _scannet_tree(tmp_path / "raw", ids.astype(np.float32)), tmp_path / "out",
                          workers=1, progress=False)
    stored = np.load(tmp_path / "out" / "scenes" / "scene0000_00" / "label.npy")
    # NYU40 1, 2, 3, 5 are benchmark classes 0, 1, 2, 4; 0 is unannotated
    assert stored.tolist() == [0, 1, 2, 4, -100] * 20
    assert manifest["scenes"]["scene0000_00"]["ignored"] == 20


def test_folder_float_label_column_uses_the_same_rule(tmp_path):
    raw = tmp_path / "raw"
    (raw / "train").mkdir(parents=True)
    (raw / "classes.yaml").write_text("classes:\n  - {name: a, ids: [1]}\n  - {name: b, ids: [2]}\n")
    xyz = np.random.default_rng(0).random((40, 3))
    np.savetxt(raw / "train" / "s.txt", np.column_stack([xyz, np.r_[np.ones(39), 1.5]]),
               header="x y z label")
    preprocess_fails("folder", raw, tmp_path, "1 non-integer value(s) (e.g. 1.5)", "s.txt")


@pytest.mark.parametrize("raw, expected", [
    (np.array([0, 39, 40], np.uint16), [0, 39, 40]),
    (np.array([-1.0, 7.0], np.float64), [-1, 7]),
    (np.array([4294967295], np.uint32), [4294967295]),
])
def test_integer_labels_keeps_every_integer_value(raw, expected):
    assert integer_labels(raw, "f.ply").tolist() == expected


@pytest.mark.parametrize("raw, shown", [(np.array([3.999]), "3.999"), (np.array([1.0, np.nan]), "nan"),
                                        (np.array([np.inf]), "inf")])
def test_integer_labels_refuses_fractions_and_non_finite(raw, shown):
    with pytest.raises(DataFormatError, match=rf"f\.ply: label field 'label' holds 1 non-integer value\(s\) \(e\.g\. {shown}\)"):
        integer_labels(raw, "f.ply")
