"""scripts/visualize.py renders exported PLYs headless: the PNG shows the palette's colours."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lib.export import write_ply

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "visualize.py"
PALETTE = np.array([[255, 0, 0], [0, 0, 255]], dtype=np.uint8)


def _run(*args):
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True, timeout=120)


def _cloud(tmp_path, wrong=None):
    """4000 points in two halves, class 0 (red) and class 1 (blue); `wrong`: True/False adds labels
    that disagree with / equal every prediction."""
    rng = np.random.default_rng(0)
    points = rng.uniform(0, 2, size=(4000, 3))
    pred = (points[:, 0] > 1).astype(np.int64)
    labels = None if wrong is None else (1 - pred if wrong else pred)
    return write_ply(tmp_path / "cloud.ply", points, pred, PALETTE, labels)


def _pixels(png, size):
    import matplotlib.image as mpimg

    image = mpimg.imread(png)[..., :3]
    assert image.shape[:2] == (size[1], size[0])
    return image.reshape(-1, 3)


def _count(pixels, rgb):
    return int((np.abs(pixels - np.array(rgb)).max(axis=1) < 0.1).sum())


def test_rgb_render_shows_both_class_colours(tmp_path):
    ply = _cloud(tmp_path)
    out = tmp_path / "render.png"
    result = _run(ply, "--out", out, "--size", 400, 300)
    assert result.returncode == 0, result.stderr
    pixels = _pixels(out, (400, 300))
    assert _count(pixels, [1, 0, 0]) > 500 and _count(pixels, [0, 0, 1]) > 500


def test_error_render_marks_wrong_points_only(tmp_path):
    out = tmp_path / "errors.png"
    assert _run(_cloud(tmp_path, wrong=False), "--color", "error", "--out", out, "--size", 400, 300).returncode == 0
    assert _count(_pixels(out, (400, 300)), [0.85, 0.1, 0.1]) == 0  # nothing wrong, nothing red
    assert _run(_cloud(tmp_path, wrong=True), "--color", "error", "--out", out, "--size", 400, 300).returncode == 0
    assert _count(_pixels(out, (400, 300)), [0.85, 0.1, 0.1]) > 500


def test_missing_field_is_a_one_line_error(tmp_path):
    ply = _cloud(tmp_path)  # no labels, so no `error` field
    result = _run(ply, "--color", "error", "--out", tmp_path / "x.png")
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [f"{ply}: no 'error' field for --color error "
                                                  "(has red, green, blue, pred)"]


def test_show_without_display_says_so(tmp_path, monkeypatch):
    if not sys.platform.startswith("linux"):
        pytest.skip("the display check applies to Linux only")
    ply = _cloud(tmp_path)
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    result = _run(ply, "--show")
    assert result.returncode != 0 and "--show needs a display" in result.stderr


def _visualize():
    import importlib.util

    spec = importlib.util.spec_from_file_location("visualize", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _legend_of(fig):
    """(texts, facecolours) of the figure's legend, read from the matplotlib artists."""
    (legend,) = fig.legends
    texts = [t.get_text() for t in legend.get_texts()]
    colours = [tuple(np.round(h.get_facecolor()[:3], 4)) for h in legend.legend_handles]
    return texts, colours


def _render_figure(vis, ply, mode):
    xyz, fields = vis.read_cloud(ply)
    legend = vis.legend_entries(fields, mode, vis.read_classes(ply))
    return vis.figure(xyz, vis.colours(ply, fields, mode), (400, 300), 10_000, 55.0, -60.0, 3.0,
                      vis.title_of(ply, mode), legend)


def test_legend_lists_the_exported_class_names_in_their_palette_colours(tmp_path):
    import matplotlib.pyplot as plt

    vis = _visualize()
    rng = np.random.default_rng(1)
    points = rng.uniform(0, 2, size=(3000, 3))
    pred = np.where(points[:, 0] > 1, 2, 0)  # classes 0 and 2 present, class 1 absent
    palette = np.array([[200, 30, 40], [10, 220, 30], [20, 40, 230]], dtype=np.uint8)
    names = ["wall", "floor", "office chair"]  # a name with a space survives the header
    labels = np.where(points[:, 0] > 1.5, 1, pred)  # right below x = 1.5, wrong (floor) above
    ply = write_ply(tmp_path / "scene0042_00.ply", points, pred, palette, labels=labels, class_names=names)

    fig = _render_figure(vis, ply, "rgb")
    texts, colours = _legend_of(fig)
    assert texts == ["wall", "office chair"]
    assert colours == [tuple(np.round(palette[k] / 255.0, 4)) for k in (0, 2)]
    assert fig._suptitle.get_text() == "scene0042_00 - colour: rgb"
    plt.close(fig)

    fig = _render_figure(vis, ply, "label")  # labels 0, 1, 2: the same palette as rgb, names from the header
    texts, colours = _legend_of(fig)
    assert texts == names and colours == [tuple(np.round(palette[k] / 255.0, 4)) for k in (0, 1, 2)]
    assert fig._suptitle.get_text() == "scene0042_00 - colour: label"
    plt.close(fig)

    fig = _render_figure(vis, ply, "error")
    assert _legend_of(fig)[0] == ["right", "wrong"]
    plt.close(fig)


def test_legend_without_header_names_classes_by_id(tmp_path):
    vis = _visualize()
    ply = _cloud(tmp_path)  # written without class names
    _, fields = vis.read_cloud(ply)
    entries = vis.legend_entries(fields, "rgb", vis.read_classes(ply))
    assert [t for t, _ in entries] == ["class 0", "class 1"]
    assert [tuple(c) for _, c in entries] == [tuple(PALETTE[k] / 255.0) for k in (0, 1)]


def _scene_with_unlabelled(tmp_path):
    """Three bands along x: class 0 predicted right, class 1 predicted as 0 (wrong), unlabelled."""
    rng = np.random.default_rng(2)
    points = rng.uniform(0, 3, size=(3000, 3))
    band = np.floor(points[:, 0]).astype(np.int64)
    pred = np.where(band == 2, 1, 0)
    labels = np.array([0, 1, -100])[band]
    palette = np.array([[200, 30, 40], [20, 40, 230]], dtype=np.uint8)
    ply = write_ply(tmp_path / "scene.ply", points, pred, palette, labels=labels, class_names=["wall", "floor"])
    return ply, band, pred, labels, palette


def test_one_palette_in_every_class_view(tmp_path):
    """Issue 23: rgb used the dataset palette, label / pred another colour map. Now a class has one
    colour in rgb, label and pred, and the PLY's stored colours are that palette."""
    from plyfile import PlyData

    vis = _visualize()
    ply, band, pred, labels, palette = _scene_with_unlabelled(tmp_path)
    _, fields = vis.read_cloud(ply)
    rgb = vis.colours(ply, fields, "rgb")
    label_view, pred_view = vis.colours(ply, fields, "label"), vis.colours(ply, fields, "pred")
    np.testing.assert_allclose(pred_view, palette[pred] / 255.0)
    np.testing.assert_allclose(rgb, pred_view)  # the stored colours are the palette's
    labelled = labels >= 0
    np.testing.assert_allclose(label_view[labelled], palette[labels[labelled]] / 255.0)
    np.testing.assert_allclose(label_view[~labelled], np.full(((~labelled).sum(), 3), 128 / 255.0))
    header = PlyData.read(str(ply)).comments
    assert "unlabelled 128 128 128" in header
    texts, colours = zip(*vis.legend_entries(fields, "label", vis.read_classes(ply)))
    assert texts == ("wall", "floor", "unlabelled")
    assert [tuple(np.round(c, 4)) for c in colours][-1] == tuple(np.round(np.full(3, 128 / 255.0), 4))


def test_error_view_separates_right_wrong_and_unlabelled(tmp_path):
    vis = _visualize()
    ply, band, pred, labels, palette = _scene_with_unlabelled(tmp_path)
    _, fields = vis.read_cloud(ply)
    view = vis.colours(ply, fields, "error")
    expected = np.array([[46, 160, 67], [217, 26, 26], [128, 128, 128]]) / 255.0  # right, wrong, unlabelled
    np.testing.assert_allclose(view, expected[band])  # band 0 right, 1 wrong, 2 unlabelled
    assert [t for t, _ in vis.legend_entries(fields, "error", vis.read_classes(ply))] == ["right", "wrong", "unlabelled"]
    out = tmp_path / "errors.png"
    assert _run(ply, "--color", "error", "--out", out, "--size", 400, 300).returncode == 0
    pixels = _pixels(out, (400, 300))
    for rgb in expected:
        assert _count(pixels, rgb) > 200, rgb


def test_tensorboard_point_clouds_use_the_same_colours():
    from lib.engine.hooks import class_colours

    palette = np.array([[200, 30, 40], [20, 40, 230]], dtype=np.uint8)
    out = class_colours(np.array([1, 0, -100, 5]), palette)
    assert out.tolist() == [[20, 40, 230], [200, 30, 40], [128, 128, 128], [128, 128, 128]]
