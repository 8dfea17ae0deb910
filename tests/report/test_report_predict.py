"""The page of a predict run (scans without scores), from a run folder laid out as predict mode
writes it: predictions/ply/<scan>.ply (x, y, z, the scan's red, green, blue, pred, confidence) and
predictions/predict_summary.json. Built here with plyfile, point by point known."""
import json

import numpy as np
import pytest

from tests.report.report_helpers import canvas_pixels, colour_count, errors_in, frames, open_page, wait_frames

NAMES = ["floor", "chair"]
PALETTE = [[230, 120, 10], [20, 200, 220]]
SCAN_RGB = (90, 60, 160)
RAMP_LOW, RAMP_HIGH = (68, 1, 84), (253, 231, 37)  # viewer.js confidence ramp ends


def predict_run(root, points: int = 40_000, labels: bool = False):
    """A predict run folder with one scan: a 4 m x 4 m slab, class 0 (confidence 0) where x < 2,
    class 1 (confidence 1) elsewhere, every point coloured SCAN_RGB."""
    from plyfile import PlyData, PlyElement

    rng = np.random.default_rng(0)
    xyz = rng.uniform([0, 0, 0], [4, 4, 0.3], size=(points, 3)).astype(np.float32)
    pred = (xyz[:, 0] >= 2).astype(np.int32)
    fields = [("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("red", "u1"), ("green", "u1"), ("blue", "u1"),
              ("pred", "<i4"), ("confidence", "<f4")] + ([("label", "<i4")] if labels else [])
    vertex = np.empty(points, dtype=fields)
    for i, axis in enumerate("xyz"):
        vertex[axis] = xyz[:, i]
    vertex["red"], vertex["green"], vertex["blue"] = SCAN_RGB
    vertex["pred"] = pred
    vertex["confidence"] = pred.astype(np.float32)
    if labels:
        vertex["label"] = pred
    folder = root / "predictions" / "ply"
    folder.mkdir(parents=True)
    comments = [f"class {k} {r} {g} {b} {n}" for k, (n, (r, g, b)) in enumerate(zip(NAMES, PALETTE))]
    PlyData([PlyElement.describe(vertex, "vertex")], text=False, comments=comments).write(str(folder / "slab.ply"))
    (root / "predictions" / "predict_summary.json").write_text(json.dumps({"scans": 1, "points": points}))
    return root


def test_predict_page_shows_scans_without_scores(tmp_path, browser):
    pytest.importorskip("plyfile", reason="the scan is written with plyfile")
    from lib.report import write_run_report

    run = predict_run(tmp_path / "predict")
    page = write_run_report(run, max_points=10_000)
    assert page == run / "report.html"
    assert errors_in(open_page(browser, page)) == []
    assert "A predict run" in browser.page_source and not browser.find_elements("css selector", "table.iou")
    disabled = {o.get_attribute("value") for o in browser.find_elements("css selector", "#voxseg-mode option")
                if o.get_property("disabled")}
    assert disabled == {"gt", "error"}  # no labels
    note = browser.find_element("id", "voxseg-note").text
    assert "10,000 of 40,000 points stored" in note and "subsample" in note
    data = json.loads(browser.execute_script("return document.getElementById('voxseg-data').textContent"))
    assert [s["n"] for s in data["scenes"]] == [10_000]

    pixels = canvas_pixels(browser)  # prediction colours first
    assert colour_count(pixels, PALETTE[0]) >= 50 and colour_count(pixels, PALETTE[1]) >= 50
    assert colour_count(pixels, SCAN_RGB) == 0
    for mode, present, absent in (("rgb", [SCAN_RGB], PALETTE), ("confidence", [RAMP_LOW, RAMP_HIGH], [SCAN_RGB])):
        from selenium.webdriver.support.ui import Select
        before = frames(browser)
        Select(browser.find_element("id", "voxseg-mode")).select_by_value(mode)
        wait_frames(browser, before)
        pixels = canvas_pixels(browser)
        assert all(colour_count(pixels, c) >= 50 for c in present), mode
        assert all(colour_count(pixels, c) == 0 for c in absent), mode
    # hiding class 1 (by prediction) in confidence mode removes its points: the high end of the ramp
    before = frames(browser)
    browser.find_element("css selector", "#voxseg-legend li[data-class='1']").click()
    wait_frames(browser, before)
    pixels = canvas_pixels(browser)
    assert colour_count(pixels, RAMP_HIGH) == 0 and colour_count(pixels, RAMP_LOW) >= 50
    assert errors_in(browser.get_log("browser")) == []


def test_scene_budget_and_classes_read_without_a_browser(tmp_path):
    pytest.importorskip("plyfile", reason="the scan is written with plyfile")
    from lib.report.collect import collect_run

    run = collect_run(predict_run(tmp_path / "p", points=3000, labels=True), max_points=1000)
    assert run["kind"] == "predict" and run["metrics"] is None
    assert run["class_names"] == NAMES and run["palette"] == PALETTE
    (scene,) = run["scenes"]
    assert scene["points_total"] == 3000 and scene["points_stored"] == 1000
    # the subsample keeps each point's fields together: class 1 exactly where x >= 2, label = pred
    assert np.array_equal(scene["pred"], (scene["xyz"][:, 0] >= 2).astype(np.int64))
    assert np.array_equal(scene["label"], scene["pred"]) and not scene["rgb_is_prediction"]


def covered(pixels) -> int:
    """Pixels showing a point (neither the white background nor the canvas's grey border)."""
    return int(((pixels != 255).any(axis=2) & (pixels != 204).any(axis=2)).sum())


def extent(pixels) -> int:
    """Area of the bounding box of the pixels showing a point."""
    shown = (pixels != 255).any(axis=2) & (pixels != 204).any(axis=2)
    rows, cols = np.flatnonzero(shown.any(axis=1)), np.flatnonzero(shown.any(axis=0))
    return int((rows[-1] - rows[0] + 1) * (cols[-1] - cols[0] + 1)) if len(rows) else 0


def settle(driver, before):
    """Waits for the frame drawn once the view rests (the viewer redraws every point then)."""
    import time
    wait_frames(driver, before)
    time.sleep(0.5)  # past the viewer's REST_MS, so the last frame is the whole scene at rest
    return frames(driver)


def test_orbit_zoom_and_point_size_move_the_pixels(tmp_path, browser):
    pytest.importorskip("plyfile", reason="the scan is written with plyfile")
    from selenium.webdriver.common.action_chains import ActionChains

    from lib.report import write_run_report

    page = write_run_report(predict_run(tmp_path / "predict", points=20_000))
    assert errors_in(open_page(browser, page)) == []
    canvas = browser.find_element("id", "voxseg-canvas")
    start = canvas_pixels(browser)
    before = frames(browser)
    ActionChains(browser).move_to_element(canvas).click_and_hold().move_by_offset(120, 40).release().perform()
    settle(browser, before)
    orbited = canvas_pixels(browser)
    assert (orbited != start).any(axis=2).sum() > 1000  # the slab turned
    before = frames(browser)
    browser.execute_script("arguments[0].dispatchEvent(new WheelEvent('wheel', {deltaY: -600, cancelable: true}))",
                           canvas)
    settle(browser, before)
    zoomed = canvas_pixels(browser)
    assert extent(zoomed) > 1.5 * extent(orbited)  # nearer: the slab spans more of the canvas
    before = frames(browser)
    browser.execute_script("const s = document.getElementById('voxseg-size'); s.value = 6; "
                           "s.dispatchEvent(new Event('input'))")
    settle(browser, before)
    assert covered(canvas_pixels(browser)) > 1.3 * covered(zoomed)  # bigger points cover more
    assert errors_in(browser.get_log("browser")) == []
