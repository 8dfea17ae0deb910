"""The report page: one self-contained HTML file (style, viewer script and every scene inlined; the
page fetches nothing). `write_report(run_dirs, out)` for one run or a comparison of several.

Scenes travel as base64 blocks (lib/report/assets/viewer.js reads them): xyz quantised to uint16 over
the scene's bounding box (under 0.2 mm steps on a 10 m room), colours uint8, classes uint8 (uint16
above 254 classes), confidence uint8: about 13 bytes a point, 17 as base64. Points are stored in a
seeded random order, so the viewer can draw a prefix (a uniform subsample) while the view moves.
"""
import base64
import json
import math
from html import escape
from pathlib import Path

import numpy as np

from lib.report.charts import line_chart
from lib.report.collect import collect_run
from lib.report.scenes import MAX_POINTS_PER_PAGE, MAX_POINTS_PER_SCENE, MAX_SCENES_PER_RUN, scene_files
from lib.units import MIB

ASSETS = Path(__file__).parent / "assets"
MODES = [("rgb", "RGB (the PLY's colour)"), ("pred", "prediction"), ("gt", "ground truth"), ("error", "error"),
         ("confidence", "confidence")]


def _num(v, pct=False, digits=2) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    if pct:
        return f"{100 * v:.{digits}f}"
    if isinstance(v, int) or float(v).is_integer() and abs(v) >= 1000:
        return f"{int(v):,}"
    return f"{v:.{digits}f}" if abs(v) >= 0.01 else f"{v:.3g}"


def _value_attr(v) -> str:
    return "" if v is None else repr(v)


def _b64(array: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(array).tobytes()).decode("ascii")


def _subsample(scene: dict, n: int, seed: int = 1) -> dict:
    if scene["points_stored"] <= n:
        return scene
    keep = np.sort(np.random.default_rng(seed).choice(scene["points_stored"], size=n, replace=False))
    out = dict(scene, points_stored=n)
    for key in ("xyz", "rgb", "pred", "label", "confidence"):
        if out[key] is not None:
            out[key] = out[key][keep]
    return out


def _shuffle(scene: dict, seed: int = 2) -> dict:
    """The scene's points in a seeded random order: any prefix is then a uniform subsample, which the
    viewer draws alone while the view moves."""
    order = np.random.default_rng(seed).permutation(scene["points_stored"])
    return dict(scene, **{key: scene[key][order] for key in ("xyz", "rgb", "pred", "label", "confidence")
                          if scene[key] is not None})


def encode_scene(scene: dict, run_index: int, num_classes: int, budget: int) -> tuple[dict, dict]:
    """(the scene's JSON entry, its arrays by block name: pos, rgb, pred, label, conf; None = absent)."""
    scene = _shuffle(_subsample(scene, budget))
    xyz = scene["xyz"].astype(np.float64)
    lo, hi = (xyz.min(axis=0), xyz.max(axis=0)) if len(xyz) else (np.zeros(3), np.ones(3))
    size = np.maximum(hi - lo, 1e-6)
    pos = np.rint((xyz - lo) / size * 65535).clip(0, 65535).astype("<u2")
    wide = num_classes >= 255
    dtype, none = ("<u2", 65535) if wide else ("u1", 255)

    def classes(values):
        if values is None:
            return None
        out = np.full(len(values), none, dtype=dtype)
        ok = (values >= 0) & (values < num_classes)
        out[ok] = values[ok]
        return out

    pred, label = classes(scene["pred"]), classes(scene["label"])
    if label is not None and not (label != none).any():
        label = None
    conf = None if scene["confidence"] is None else np.rint(scene["confidence"] * 255).astype("u1")
    rgb = scene["rgb"]
    blocks = {"pos": pos, "rgb": rgb, "pred": pred, "label": label, "conf": conf}
    modes = [m for m, have in (("rgb", rgb is not None and not scene.get("rgb_is_prediction")),
                               ("pred", pred is not None), ("gt", label is not None),
                               ("error", pred is not None and label is not None), ("confidence", conf is not None))
             if have]
    if not modes:  # no colour and no class: show the points in the rgb slot's grey
        modes, blocks["rgb"] = ["rgb"], np.full((len(pos), 3), 120, dtype=np.uint8)
    total, stored = scene["points_total"], len(pos)
    note = (f"all {total:,} points" if stored == total else
            f"{stored:,} of {total:,} points stored: a uniform random subsample (this page keeps at most "
            f"{budget:,} points per scene)")
    if scene.get("rgb_is_prediction"):
        note += "; the PLY's colours are the predicted classes' (test-mode export), so RGB is off"
    entry = {"run": run_index, "name": scene["name"], "n": stored, "total": total,
             "bbox": [lo.tolist(), (lo + size).tolist()], "class_dtype": "u2" if wide else "u1",
             "class_none": none, "modes": modes, "note": note}
    return entry, blocks


def _iou_table(run: dict) -> str:
    m = run["metrics"]
    rows = []
    for k, name in enumerate(run["class_names"]):
        entry = m["per_class"].get(name, {})
        iou = entry.get("iou")
        bar = "" if iou is None else f'<span class="bar" style="width:{200 * iou:.0f}px"></span>'
        colour = ",".join(map(str, run["palette"][k])) if k < len(run["palette"]) else "128,128,128"
        rows.append(f'<tr data-class="{escape(name)}"><td><span class="swatch" style="background:rgb({colour})"></span>'
                    f'{escape(name)}</td><td data-key="iou" data-value="{_value_attr(iou)}">{_num(iou, True)}</td>'
                    f'<td data-key="acc" data-value="{_value_attr(entry.get("acc"))}">{_num(entry.get("acc"), True)}</td>'
                    f'<td>{_num(entry.get("gt_points"))}</td><td style="text-align:left">{bar}</td></tr>')
    head = "<tr><th>class</th><th>IoU %</th><th>Acc %</th><th>GT points</th><th></th></tr>"
    means = (f'<p>mIoU <b data-key="miou" data-value="{_value_attr(m["miou"])}">{_num(m["miou"], True)}</b> · '
             f'mAcc <b data-key="macc" data-value="{_value_attr(m["macc"])}">{_num(m["macc"], True)}</b> · '
             f'allAcc <b data-key="allacc" data-value="{_value_attr(m["allacc"])}">{_num(m["allacc"], True)}</b> '
             f'<span class="muted">({escape(m.get("convention_description") or m.get("convention") or "")})</span></p>')
    return f'{means}<table class="iou">{head}{"".join(rows)}</table>'


def _confusion_table(run: dict) -> str:
    conf = np.asarray(run["confusion"], dtype=np.float64)
    names = run["class_names"]
    k = len(names)
    if conf.ndim != 2 or conf.shape[0] != k:
        return ""
    rows_sum = conf.sum(axis=1, keepdims=True)
    share = np.divide(conf, rows_sum, out=np.zeros_like(conf), where=rows_sum > 0)
    cols = names + (["invalid"] if conf.shape[1] > k else [])
    head = "<tr><th>GT \\ pred</th>" + "".join(f'<th class="col">{escape(c)}</th>' for c in cols) + "</tr>"
    body = []
    for i, name in enumerate(names):
        cells = "".join(f'<td style="background:rgba(74,123,208,{share[i, j]:.3f})" title="{int(conf[i, j]):,} points" '
                        f'data-count="{int(conf[i, j])}">{100 * share[i, j]:.0f}</td>' for j in range(conf.shape[1]))
        body.append(f"<tr><th>{escape(name)}</th>{cells}</tr>")
    return ('<p class="muted">Rows: ground truth, normalised to 100 (recall); columns: prediction. Hover for '
            f'point counts.</p><table class="confusion">{head}{"".join(body)}</table>')


def _group(tag: str) -> str:
    if tag == "train/loss" or tag.startswith("loss/"):
        return "losses"
    if tag.startswith("val_iou/"):
        return "validation IoU per class"
    prefix = tag.split("/", 1)[0]
    return {"val": "validation", "memory": "memory (MiB)", "model": "model logs"}.get(prefix, {
        "train/lr": "learning rate", "train/step_time": "seconds per step", "train/data_time": "seconds per step",
        "train/peak_memory_mb": "memory (MiB)", "train/grad_norm": "gradient norm"}.get(tag, "training metrics"))


def _curves(curves: dict) -> str:
    groups: dict = {}
    for tag in sorted(curves):
        groups.setdefault(_group(tag), []).append((tag, curves[tag]))
    charts = [line_chart(title, series) for title, series in groups.items()]
    return f'<div class="charts">{"".join(charts)}</div>' if any(charts) else ""


def _memory(report: dict) -> str:
    def mib(v):
        return "–" if v is None else f"{v / MIB:,.1f}"

    head = (f'<p>{escape(str(report.get("device")))}, {report.get("voxels") or "?"} voxels, '
            f'{report.get("passes", 1)} pass(es): peak {mib(report.get("step_peak_bytes"))} MiB above the start, '
            f'<b>{mib(report.get("total_peak_bytes"))} MiB</b> with parameters and buffers '
            f'({mib(report.get("parameters_bytes"))} MiB); kept for backward {mib(report.get("saved_bytes"))} MiB.</p>')
    rows = "".join(f'<tr><td>{escape(m["name"])}</td><td>{mib(m.get("fwd_saved_bytes"))}</td>'
                   f'<td>{mib(m.get("fwd_peak_bytes"))}</td><td>{mib(m.get("bwd_peak_bytes"))}</td>'
                   f'<td>{_num(m.get("fwd_ms"))}</td><td>{_num(m.get("bwd_ms"))}</td></tr>'
                   for m in report.get("modules") or [])
    return (head + "<table><tr><th>module</th><th>saved MiB</th><th>fwd peak MiB</th><th>bwd peak MiB</th>"
            f"<th>fwd ms</th><th>bwd ms</th></tr>{rows}</table>")


def _facts(run: dict) -> str:
    items = [("kind", run["kind"]), ("folder", run["path"]), ("training run", run["train_dir"]),
             ("parameters", _num(run["parameters"])), ("iterations", _num(run["iterations"])),
             ("s/iter", f'{_num(run["sec_per_iter"], digits=3)} ({run["sec_per_iter_source"]})'
              if run["sec_per_iter"] is not None else None),
             ("peak memory", f'{_num(run["peak_memory_mb"], digits=1)} MiB ({run["peak_memory_source"]})'
              if run["peak_memory_mb"] is not None else None)]
    if run["predict"]:
        items += [(f"predict: {k}", json.dumps(v) if not isinstance(v, str) else v)
                  for k, v in run["predict"].items() if not isinstance(v, (dict, list)) or len(json.dumps(v)) < 120]
    return "<table>" + "".join(f"<tr><td>{escape(k)}</td><td style='text-align:left'>{escape(str(v))}</td></tr>"
                               for k, v in items if v not in (None, "–")) + "</table>"


COMPARE_ROWS = [("mIoU %", "miou", True, "max"), ("mAcc %", "macc", True, "max"), ("allAcc %", "allacc", True, "max")]
COMPARE_TAIL = [("parameters", "parameters", False, None), ("s/iter", "sec_per_iter", False, "min"),
                ("peak memory (MiB)", "peak_memory_mb", False, "min"), ("iterations", "iterations", False, None)]


def _compare_value(run: dict, key: str):
    m = run["metrics"] or {}
    if key.startswith("iou/"):
        return (m.get("per_class") or {}).get(key[4:], {}).get("iou")
    return m.get(key) if key in ("miou", "macc", "allacc") else run.get(key)


def _comparison(runs: list) -> str:
    names = []
    for run in runs:
        names += [n for n in run["class_names"] if n not in names]
    rows = COMPARE_ROWS[:] + [(f"IoU {n} %", f"iou/{n}", True, "max") for n in names] + COMPARE_TAIL
    head = "<tr><th></th>" + "".join(f'<th data-run="{i}">{escape(r["label"])}</th>' for i, r in enumerate(runs)) + "</tr>"
    body = []
    for title, key, pct, best in rows:
        values = [_compare_value(r, key) for r in runs]
        finite = [v for v in values if v is not None]
        # bold marks a winner: not when every run has the same value
        target = (max if best == "max" else min)(finite) if best and len(set(finite)) > 1 else None
        cells = "".join(f'<td data-run="{i}" data-key="{escape(key)}" data-value="{_value_attr(v)}"'
                        f'{" class=best" if target is not None and v == target else ""}>'
                        f'{_num(v, pct, digits=3 if key == "sec_per_iter" else 2)}</td>'
                        for i, v in enumerate(values))
        body.append(f"<tr><td>{escape(title)}</td>{cells}</tr>")
    overlaid = []
    tags = [t for t in ("train/loss", "train/lr", "val/mIoU", "val/mAcc") if any(t in r["curves"] for r in runs)]
    tags += sorted({t for r in runs for t in r["curves"] if t.startswith("loss/")})
    for tag in tags:
        overlaid.append(line_chart(tag, [(r["label"], r["curves"].get(tag, [])) for r in runs]))
    return (f'<h2>Comparison</h2><table id="voxseg-compare">{head}{"".join(body)}</table>'
            '<p class="muted">Best in bold. s/iter: mean logged step time (train/step_time), else elapsed / '
            'iterations; peak memory: the highest recorded peak (memory hook, CUDA peak, or the memory report).</p>'
            + (f'<h3>Curves, overlaid</h3><div class="charts">{"".join(overlaid)}</div>' if tags else ""))


def _labels(runs: list) -> None:
    names = [r["name"] for r in runs]
    for r in runs:
        r["label"] = r["name"] if names.count(r["name"]) == 1 else "/".join(Path(r["path"]).parts[-2:])


def render(runs: list, budget: int, title: str) -> str:
    """The page's HTML for collected runs (lib.report.collect.collect_run dicts)."""
    _labels(runs)
    scenes, blocks = [], []
    for r_index, run in enumerate(runs):
        for scene in run["scenes"]:
            entry, data = encode_scene(scene, r_index, len(run["class_names"]), budget)
            index = len(scenes)
            scenes.append(entry)
            blocks += [f'<script type="application/octet-stream" id="scene{index}-{key}">{_b64(arr)}</script>'
                       for key, arr in data.items() if arr is not None]
    page_runs = [{"name": r["label"], "class_names": r["class_names"], "palette": r["palette"],
                  "iou": [((r["metrics"] or {}).get("per_class") or {}).get(n, {}).get("iou") for n in r["class_names"]]
                  if r["metrics"] else None} for r in runs]
    payload = json.dumps({"runs": page_runs, "scenes": scenes}).replace("</", "<\\/")
    parts = [f"<h1>{escape(title)}</h1>",
             '<p class="muted">Written by voxseg (lib/report). Self-contained: opens from disk, fetches nothing.</p>']
    if len(runs) > 1:
        parts.append(_comparison(runs))
    if scenes:
        options = "".join(f'<option value="{i}">{escape(runs[s["run"]]["label"])} / {escape(s["name"])}</option>'
                          for i, s in enumerate(scenes))
        modes = "".join(f'<option value="{m}">{escape(t)}</option>' for m, t in MODES)
        left_out = sum(r["scenes_total"] - len(r["scenes"]) for r in runs)
        parts.append(
            '<h2>Scenes</h2><div id="voxseg-viewer"><canvas id="voxseg-canvas"></canvas><div id="voxseg-side">'
            f'<label>scene <select id="voxseg-scene">{options}</select></label>'
            f'<label>colour <select id="voxseg-mode">{modes}</select></label>'
            '<label>point size <input id="voxseg-size" type="range" min="1" max="8" step="0.5" value="2"></label>'
            '<p class="muted" id="voxseg-note"></p><p class="muted">Legend (IoU %): a click hides or shows a class '
            '(by ground truth in that mode, else by prediction).</p><ul id="voxseg-legend"></ul>'
            '<p class="muted">Drag: orbit · right drag or shift + drag: pan · wheel: zoom.</p>'
            '<p class="muted" id="voxseg-status"></p></div></div>'
            + (f'<p class="muted">{left_out} more scene(s) not stored on this page (at most '
               f'{MAX_SCENES_PER_RUN} per run).</p>' if left_out else ""))
    for run in runs:
        parts.append(f'<section class="run" data-run="{escape(run["label"])}"><h2>Run {escape(run["label"])}</h2>'
                     + _facts(run))
        if run["metrics"]:
            parts.append("<h3>Per-class IoU</h3>" + _iou_table(run))
        elif run["kind"] == "predict":
            parts.append('<p class="muted">A predict run: scans without scores.</p>')
        elif run["kind"] == "test":
            parts.append('<p class="muted">No labels in the tested split: predictions only, nothing scored.</p>')
        if run["confusion"]:
            parts.append("<h3>Confusion matrix</h3>" + _confusion_table(run))
        if run["curves"]:
            parts.append("<h3>Training curves</h3>" + _curves(run["curves"]))
        if run["memory"]:
            parts.append("<h3>Memory report</h3>" + _memory(run["memory"]))
        parts.append("</section>")
    css = (ASSETS / "report.css").read_text()
    script = (ASSETS / "viewer.js").read_text().replace("</", "<\\/")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{escape(title)}</title><link rel=\"icon\" href=\"data:,\"><style>{css}</style></head><body>"
            + "".join(parts)
            + f'<script type="application/json" id="voxseg-data">{payload}</script>' + "".join(blocks)
            + f"<script>{script}</script></body></html>\n")


def write_report(run_dirs, out, title: str | None = None, max_points: int = MAX_POINTS_PER_SCENE,
                 page_points: int = MAX_POINTS_PER_PAGE, max_scenes: int = MAX_SCENES_PER_RUN) -> Path:
    """Writes the page of one or several run folders to `out` (atomically); returns its path.
    Each stored scene keeps at most min(max_points, page_points / scenes on the page) points."""
    from lib.io import atomic_write_text

    run_dirs = [Path(d) for d in run_dirs]
    if not run_dirs:
        raise ValueError("write_report: no run folder given")
    shown = sum(min(len(scene_files(d)), max_scenes) for d in run_dirs)
    budget = max(1, min(max_points, page_points // max(shown, 1)))
    runs = [collect_run(d, max_scenes=max_scenes, max_points=budget) for d in run_dirs]
    if title is None:
        title = (f"voxseg report: {run_dirs[0].name}" if len(run_dirs) == 1
                 else f"voxseg comparison of {len(run_dirs)} runs")
    return atomic_write_text(out, render(runs, budget, title))


def write_run_report(run_dir, out=None, **options) -> Path:
    """The page of one run (test, predict, train or profile folder), by default <run_dir>/report.html."""
    run_dir = Path(run_dir)
    return write_report([run_dir], out if out is not None else run_dir / "report.html", **options)
