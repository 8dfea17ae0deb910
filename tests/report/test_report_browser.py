"""The report pages in a real browser (headless chromium, WebGL2 on SwiftShader): the scene is drawn
in the classes' colours, the controls change the pixels, the page logs no error, and the comparison
page holds each run's own figures."""
import json
import re
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import ROOT
from tests.report.report_helpers import (canvas_pixels, colour_count, errors_in, frames, open_page,
                                         wait_frames)

RIGHT, WRONG = (40, 170, 70), (220, 40, 40)  # lib/report/assets/viewer.js error colours


def read_ply(path):
    from plyfile import PlyData

    from lib.report.scenes import read_header_classes
    ply = PlyData.read(str(path))
    names, palette = read_header_classes(ply)
    return ply["vertex"].data, names, palette


def shares(values, k):
    values = np.asarray(values)
    values = values[(values >= 0) & (values < k)]
    return np.bincount(values, minlength=k) / len(values)


def choose_mode(driver, mode):
    from selenium.webdriver.support.ui import Select

    before = frames(driver)
    Select(driver.find_element("id", "voxseg-mode")).select_by_value(mode)
    wait_frames(driver, before)


def test_test_run_page_draws_the_scene_and_its_controls_change_the_pixels(demo_runs, browser):
    _, test = demo_runs["a"]
    page = test / "report.html"
    assert page.is_file(), "--mode test wrote no report.html"
    html = page.read_text()  # self-contained: no URL, nothing loaded from elsewhere
    assert "http://" not in html and "https://" not in html
    assert not re.search(r"""(src|href)\s*=\s*["'](?!data:)""", html)
    first = sorted((test / "predictions" / "ply").glob("*.ply"))[0]
    vertex, names, palette = read_ply(first)
    # test mode exports the predicted class's probability: the largest of K, so at least 1 / K
    assert vertex["confidence"].min() >= 1 / len(names) - 1e-6 and vertex["confidence"].max() <= 1 + 1e-6
    assert errors_in(open_page(browser, page)) == []
    assert first.stem in browser.find_element("id", "voxseg-scene").text.splitlines()[0]
    # test-mode PLYs colour points by prediction: the RGB mode would repeat it and is off
    assert browser.find_element("css selector", "#voxseg-mode option[value=rgb]").get_property("disabled")

    pred_share = shares(vertex["pred"], len(names))
    shown = [k for k in range(len(names)) if pred_share[k] >= 0.05]
    assert shown
    pixels = canvas_pixels(browser)
    for k in shown:  # every class holding 5 % of the points is visible in its colour
        assert colour_count(pixels, palette[k]) >= 20, (names[k], palette[k])

    top = int(np.argmax(pred_share))
    legend = browser.find_element("css selector", f"#voxseg-legend li[data-class='{top}']")
    assert legend.text.startswith(names[top])
    before = frames(browser)
    legend.click()
    wait_frames(browser, before)
    hidden = canvas_pixels(browser)
    assert colour_count(hidden, palette[top]) == 0
    for k in shown:
        if k != top:
            assert colour_count(hidden, palette[k]) >= 20, names[k]
    before = frames(browser)
    legend.click()
    wait_frames(browser, before)
    assert colour_count(canvas_pixels(browser), palette[top]) >= 20

    choose_mode(browser, "error")
    pixels = canvas_pixels(browser)
    labelled = vertex["label"] >= 0
    wrong = float(vertex["error"][labelled].mean())
    assert colour_count(pixels, palette[top]) == 0
    if wrong >= 0.05:
        assert colour_count(pixels, WRONG) >= 20
    if wrong <= 0.95:
        assert colour_count(pixels, RIGHT) >= 20

    choose_mode(browser, "gt")
    pixels = canvas_pixels(browser)
    gt_share = shares(vertex["label"], len(names))
    for k in range(len(names)):
        if gt_share[k] >= 0.05:
            assert colour_count(pixels, palette[k]) >= 20, names[k]

    choose_mode(browser, "confidence")
    pixels = canvas_pixels(browser)
    assert all(colour_count(pixels, palette[k]) == 0 for k in shown if tuple(palette[k]) not in (RIGHT, WRONG))
    assert errors_in(browser.get_log("browser")) == []


def cell(driver, run, key):
    el = driver.find_element("css selector", f"#voxseg-compare td[data-run='{run}'][data-key='{key}']")
    value = el.get_attribute("data-value")
    return (float(value) if value else None), el.text


def test_comparison_page_shows_each_runs_figures_from_its_files(demo_runs, browser, tmp_path):
    import torch

    from lib.config import load_config
    from models import build_model
    from tests.engine.test_hooks import read_scalars as read_tensorboard

    out = tmp_path / "compare.html"
    tests = [demo_runs["a"][1], demo_runs["b"][1]]
    done = subprocess.run([sys.executable, "-m", "scripts.report", *map(str, tests), "--out", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert errors_in(open_page(browser, out)) == []
    headers = [h.text for h in browser.find_elements("css selector", "#voxseg-compare th[data-run]")]
    assert headers == ["test_a", "test_b"]
    for run, name in enumerate(("a", "b")):
        train, test = demo_runs[name]
        metrics = json.loads((test / "metrics.json").read_text())
        for key, source in (("miou", "mIoU"), ("macc", "mAcc"), ("allacc", "allAcc")):
            value, text = cell(browser, run, key)
            assert value == metrics[source] and text == f"{100 * metrics[source]:.2f}"
        for cls, entry in metrics["per_class"].items():
            value, text = cell(browser, run, f"iou/{cls}")
            assert value == entry["iou"], cls
            assert text == ("–" if entry["iou"] is None else f"{100 * entry['iou']:.2f}")
        summary = json.loads((train / "summary.json").read_text())
        assert cell(browser, run, "iterations")[0] == summary["iterations"] == (3 if name == "a" else 2)
        card = torch.load(train / "best.pth", map_location="cpu", weights_only=True)["card"]
        model = build_model(load_config("demo.yaml").model, card["in_channels"], card["num_classes"])
        assert cell(browser, run, "parameters")[0] == sum(p.numel() for p in model.parameters())
        steps = read_tensorboard(train / "tensorboard")["train/step_time"]
        assert cell(browser, run, "sec_per_iter")[0] == pytest.approx(np.mean(list(steps.values())), rel=1e-6)
        assert cell(browser, run, "peak_memory_mb")[0] is None  # a CPU run without the memory hook records none
    series = [s.get_attribute("data-series") for s in browser.find_elements(
        "css selector", "svg[data-title='train/loss'] [data-series]")]
    assert series == ["test_a", "test_b"]
