"""S3DIS: classes from annotation file names, and the known glitches of the release repaired."""
import numpy as np
import pytest

from datasets.errors import DataFormatError
from datasets.preprocessing import preprocess
from datasets.s3dis import CLASS_NAMES


def _room(root, area, room, files: dict):
    """files = {'chair_1.txt': bytes content}."""
    folder = root / area / room / "Annotations"
    folder.mkdir(parents=True)
    for name, content in files.items():
        (folder / name).write_bytes(content)
    (root / area / room / f"{room}.txt").write_bytes(b"")  # the whole-room file, unused
    return root


def _lines(rows):
    return "".join(f"{x:.3f} {y:.3f} {z:.3f} {r} {g} {b}\n" for x, y, z, r, g, b in rows).encode()


ROWS = [(1.0, 2.0, 3.0, 10, 20, 30), (1.5, 2.5, 3.5, 40, 50, 60), (0.25, 0.5, 0.75, 255, 0, 7)]


def test_classes_from_file_names_stairs_are_clutter(tmp_path):
    raw = _room(tmp_path / "raw", "Area_1", "office_1",
                {"chair_1.txt": _lines(ROWS), "stairs_1.txt": _lines(ROWS[:2]), "wall_3.txt": _lines(ROWS[:1])})
    _room(raw, "Area_5", "hallway_1", {"ceiling_1.txt": _lines(ROWS)})
    out = tmp_path / "out"
    manifest = preprocess("s3dis", raw, out, workers=1, progress=False)
    assert manifest["num_classes"] == 13 and manifest["class_names"] == CLASS_NAMES
    office = manifest["scenes"]["Area_1_office_1"]
    expected = [0] * 13
    expected[CLASS_NAMES.index("chair")] = 3
    expected[CLASS_NAMES.index("clutter")] = 2
    expected[CLASS_NAMES.index("wall")] = 1
    assert office["class_counts"] == expected and office["split"] == "Area_1" and office["points"] == 6
    assert manifest["scenes"]["Area_5_hallway_1"]["split"] == "Area_5"
    coord = np.load(out / "scenes" / "Area_1_office_1" / "coord.npy")
    color = np.load(out / "scenes" / "Area_1_office_1" / "color.npy")
    np.testing.assert_allclose(coord[:3], np.array(ROWS)[:, :3])
    np.testing.assert_array_equal(color[:3], np.array(ROWS)[:, 3:])

    import datasets
    from lib.config.schema_data import DataConfig

    val = datasets.build_dataset(DataConfig(dataset="s3dis", root=str(out)), "val")
    assert val.scene_ids == ["Area_5_hallway_1"] and val.meta.convention == "nan_absent" and val.meta.benchmark is None


def test_junk_byte_inside_a_number_is_repaired_and_reported(tmp_path):
    # as in Area_5/office_19/Annotations/ceiling_1.txt: `103.0<byte>0000`
    damaged = _lines(ROWS[:1]) + b"103.0\x100000 2.000 3.000 1 2 3\n" + _lines(ROWS[1:])
    raw = _room(tmp_path / "raw", "Area_5", "office_19", {"ceiling_1.txt": damaged})
    manifest = preprocess("s3dis", raw, tmp_path / "out", workers=1, progress=False)
    record = manifest["scenes"]["Area_5_office_19"]
    assert record["points"] == 4 and record["dropped_lines"] == 0
    assert len(record["repairs"]) == 1 and "ceiling_1.txt:2:" in record["repairs"][0]
    coord = np.load(tmp_path / "out" / "scenes" / "Area_5_office_19" / "coord.npy")
    np.testing.assert_allclose(coord[1], [103.0, 2.0, 3.0])


def test_extra_character_on_a_line_is_repaired_and_reported(tmp_path):
    # as in Area_5/hallway_6: one line carries a stray character
    for stray in (b"1.000 2.000 3.000 4 5 6x\n", b"1.000 2.000 3.000 4 5 6 \x7f\n", b"1.000 2.0#00 3.000 4 5 6\n"):
        raw = _room(tmp_path / str(len(list(tmp_path.iterdir()))), "Area_5", "hallway_6",
                    {"ceiling_1.txt": _lines(ROWS) + stray})
        out = tmp_path / f"out{len(list(tmp_path.iterdir()))}"
        record = preprocess("s3dis", raw, out, workers=1, progress=False)["scenes"]["Area_5_hallway_6"]
        assert record["points"] == 4 and len(record["repairs"]) == 1 and "ceiling_1.txt:4:" in record["repairs"][0]
        color = np.load(out / "scenes" / "Area_5_hallway_6" / "color.npy")
        coord = np.load(out / "scenes" / "Area_5_hallway_6" / "coord.npy")
        np.testing.assert_array_equal(color[3], [4, 5, 6])
        np.testing.assert_allclose(coord[3], [1.0, 2.0, 3.0])


@pytest.mark.parametrize("bad", [b"1.0 2.0 3.0 4 5\n", b"1.0 2.0 3.0 4 5 6 7\n", b"1.0 2.0 3.0 4 5 300\n"])
def test_unrepairable_line_strict_error_or_counted_drop(tmp_path, bad):
    raw = _room(tmp_path / "raw", "Area_2", "wc_1", {"sofa_1.txt": _lines(ROWS) + bad})
    with pytest.raises(DataFormatError) as err:
        preprocess("s3dis", raw, tmp_path / "out", workers=1, progress=False)
    assert "sofa_1.txt" in str(err.value) and "\n" not in str(err.value)
    record = preprocess("s3dis", raw, tmp_path / "lenient", workers=1, strict=False, progress=False)["scenes"]["Area_2_wc_1"]
    assert record["points"] == 3 and record["dropped_lines"] == 1


def test_unknown_class_and_missing_annotations(tmp_path):
    raw = _room(tmp_path / "raw", "Area_1", "office_1", {"unicorn_1.txt": _lines(ROWS)})
    with pytest.raises(DataFormatError, match="unknown S3DIS class 'unicorn'"):
        preprocess("s3dis", raw, tmp_path / "out", workers=1, progress=False)
    (tmp_path / "raw2" / "Area_1" / "office_2").mkdir(parents=True)
    with pytest.raises(DataFormatError, match="Annotations: missing Annotations folder"):
        preprocess("s3dis", tmp_path / "raw2", tmp_path / "out2", workers=1, progress=False)
    (tmp_path / "raw3").mkdir()
    with pytest.raises(DataFormatError, match="no Area_"):
        preprocess("s3dis", tmp_path / "raw3", tmp_path / "out3", workers=1, progress=False)
