"""Size and load time of a run report holding one big scene, in headless chromium (WebGL2 on SwiftShader).

    python scripts/bench_report.py --points 1000000 [--runs 3] [--json bench_report.json]

Builds a predict-run folder with one synthetic scan of --points points (a room: floor, walls and
boxes, 20 classes, scan colours, confidence), writes its report.html, then opens it from file://
--runs times in a fresh headless chromium (selenium + chromedriver) and prints, per load, the
page's own time to first frame (performance.now() when the viewer's first frame has been drawn, from
navigation start: reading the HTML, decoding the scene, uploading it, drawing it), the wall time
of the driver's load until then, and the time of one redraw (zoom: what orbit and pan cost too) and
of a colour-mode switch (every point recoloured). Software rendering on a busy machine: compare figures measured side
by side, not across machines.
"""
import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

FLAGS = ["--headless", "--no-sandbox", "--enable-unsafe-swiftshader", "--use-angle=swiftshader",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
         "--window-size=1280,1000"]


def synthetic_scan(folder: Path, points: int, seed: int = 0) -> Path:
    """predictions/ply/room.ply: a 10 m x 8 m x 3 m room's surfaces, 20 classes."""
    from plyfile import PlyData, PlyElement

    from lib.report.collect import default_palette

    rng = np.random.default_rng(seed)
    xyz = rng.uniform([0, 0, 0], [10, 8, 3], size=(points, 3)).astype(np.float32)
    face = rng.integers(0, 5, size=points)  # floor, four walls
    xyz[face == 0, 2] = 0
    xyz[face == 1, 0], xyz[face == 2, 0] = 0, 10
    xyz[face == 3, 1], xyz[face == 4, 1] = 0, 8
    pred = np.where(face == 0, 1, 0) + (rng.random(points) < 0.3) * rng.integers(2, 20, size=points)
    fields = [("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("red", "u1"), ("green", "u1"), ("blue", "u1"),
              ("pred", "<i4"), ("confidence", "<f4")]
    vertex = np.empty(points, dtype=fields)
    for i, axis in enumerate("xyz"):
        vertex[axis] = xyz[:, i]
    rgb = rng.integers(0, 256, size=(points, 3)).astype(np.uint8)
    vertex["red"], vertex["green"], vertex["blue"] = rgb[:, 0], rgb[:, 1], rgb[:, 2]
    vertex["pred"] = np.minimum(pred, 19)
    vertex["confidence"] = rng.random(points).astype(np.float32)
    out = folder / "predictions" / "ply"
    out.mkdir(parents=True, exist_ok=True)
    comments = [f"class {k} {r} {g} {b} class{k}" for k, (r, g, b) in enumerate(default_palette(20))]
    path = out / "room.ply"
    PlyData([PlyElement.describe(vertex, "vertex")], text=False, comments=comments).write(str(path))
    (folder / "predictions" / "predict_summary.json").write_text(json.dumps({"scans": 1, "points": points}))
    return path


# One redraw after a wheel event (the same frame an orbit or pan draws) or a colour-mode switch (which
# also recolours every point on the CPU), timed in the page from the event to the frame's end.
REDRAW = """
const done = arguments[arguments.length - 1], what = arguments[0], times = [];
const canvas = document.getElementById("voxseg-canvas"), select = document.getElementById("voxseg-mode");
const gl = canvas.getContext("webgl2"), probe = new Uint8Array(4);
function once(left) {
  if (!left) { times.sort((a, b) => a - b); done(times[Math.floor(times.length / 2)]); return; }
  const before = +document.body.dataset.frames, t0 = performance.now();
  if (what === "zoom") {
    canvas.dispatchEvent(new WheelEvent("wheel", {deltaY: left % 2 ? 40 : -40, cancelable: true}));
  } else {
    select.value = left % 2 ? "confidence" : "pred"; select.dispatchEvent(new Event("change"));
  }
  (function wait() {
    if (+document.body.dataset.frames > before) {
      gl.readPixels(0, 0, 1, 1, gl.RGBA, gl.UNSIGNED_BYTE, probe);
      times.push(performance.now() - t0); once(left - 1);
    } else { requestAnimationFrame(wait); }
  })();
}
once(5);
"""


def redraw_ms(driver, what: str) -> float:
    """Median of 5 timed redraws (ms)."""
    driver.set_script_timeout(300)
    return round(float(driver.execute_async_script(REDRAW, what)), 1)


def load_times(page: Path, runs: int) -> list:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.support.ui import WebDriverWait

    out = []
    for _ in range(runs):
        profile = tempfile.mkdtemp(prefix="voxseg-bench-")
        options = webdriver.ChromeOptions()
        options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
        for flag in FLAGS + [f"--user-data-dir={profile}"]:
            options.add_argument(flag)
        driver = webdriver.Chrome(service=Service(shutil.which("chromedriver") or "/usr/bin/chromedriver"),
                                  options=options)
        try:
            driver.set_page_load_timeout(600)
            start = time.perf_counter()
            driver.get(page.resolve().as_uri())
            first = WebDriverWait(driver, 600, poll_frequency=0.05).until(
                lambda d: d.execute_script("return document.body.dataset.firstFrameMs"))
            wall = round(time.perf_counter() - start, 2)
            out.append({"first_frame_ms": float(first), "wall_s": wall, "zoom_frame_ms": redraw_ms(driver, "zoom"),
                        "mode_switch_ms": redraw_ms(driver, "mode")})
        finally:
            driver.quit()
            shutil.rmtree(profile, ignore_errors=True)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--points", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    from lib.report import write_run_report

    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "predict"
        synthetic_scan(run, args.points)
        start = time.perf_counter()
        page = write_run_report(run)
        write_s = time.perf_counter() - start
        size = page.stat().st_size
        loads = load_times(page, args.runs)
    result = {"points": args.points, "page_bytes": size, "page_mib": round(size / 2 ** 20, 2),
              "write_s": round(write_s, 2), "loads": loads,
              "median_first_frame_ms": float(np.median([x["first_frame_ms"] for x in loads]))}
    print(f"{args.points:,} points: page {result['page_mib']} MiB, written in {result['write_s']} s")
    for x in loads:
        print(f"  first frame {x['first_frame_ms'] / 1000:.2f} s after navigation (driver wall {x['wall_s']} s); "
              f"a zoom redraw {x['zoom_frame_ms']} ms, a colour-mode switch {x['mode_switch_ms']} ms (medians of 5)")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
