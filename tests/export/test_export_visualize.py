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
