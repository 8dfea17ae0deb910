"""Everything a report shows about one run folder, gathered into one dict (`collect_run`).

Read from the run folder, and from the training run's folder when a test run names the checkpoint
it loaded (run_info.json "weights": curves, parameters, iterations live with the training run):
- metrics.json (test runs): mIoU, mAcc, allAcc, per-class IoU / accuracy, the confusion matrix;
- scalars.jsonl: training curves; summary.json: iterations, elapsed time;
- run_info.json: parameter count; memory_report.json (profile runs): the memory report;
- predictions/ply/*.ply: the scenes; predictions/predict_summary.json (predict runs).
A file that is absent leaves its part of the page out; one that cannot be read raises ValueError
naming it.
"""
import colorsys
from pathlib import Path

import numpy as np

from lib.report.records import RUN_INFO, SCALARS, read_json, read_scalars
from lib.report.scenes import (MAX_POINTS_PER_SCENE, MAX_SCENES_PER_RUN, is_prediction_colour, read_scene,
                               scene_files)
from lib.units import MIB


def default_palette(k: int) -> list:
    """k distinct colours (evenly spaced hues) for runs whose files name no palette."""
    return [[int(255 * c) for c in colorsys.hsv_to_rgb(i / max(k, 1), 0.65, 0.9)] for i in range(k)]


def training_dir(run_dir: Path, info: dict, summary: dict) -> Path | None:
    """The folder of the training run behind `run_dir`: itself for a train run, else the folder of
    the checkpoint the run loaded (run_info.json "weights") when that folder still exists."""
    if (summary or {}).get("mode") == "train" or (info or {}).get("mode") == "train":
        return run_dir
    weights = (info or {}).get("weights")
    if weights:
        folder = Path(weights).parent
        if not folder.is_absolute():
            folder = (run_dir / folder) if (run_dir / folder).is_dir() else folder
        if folder.is_dir() and folder.resolve() != run_dir.resolve():
            return folder
    return None


def _metrics(raw: dict | None) -> dict | None:
    if not raw:
        return None
    return {"miou": raw.get("mIoU"), "macc": raw.get("mAcc"), "allacc": raw.get("allAcc"),
            "convention": raw.get("convention"), "convention_description": raw.get("convention_description"),
            "scored_points": raw.get("scored_points"),
            "per_class": {name: {"iou": v.get("iou"), "acc": v.get("acc"), "gt_points": v.get("gt_points")}
                          for name, v in (raw.get("per_class") or {}).items()}}


def _mean_step_time(curves: dict) -> float | None:
    points = curves.get("train/step_time") or []
    return float(np.mean([v for _, v in points])) if points else None


def _peak_memory_mb(curves: dict, memory: dict | None) -> tuple[float | None, str | None]:
    """Highest recorded peak (MiB) and where it came from."""
    for name in ("memory/peak_mib", "train/peak_memory_mb", "memory/rss_peak_mib"):
        values = [v for _, v in curves.get(name) or []]
        if values:
            return float(max(values)), name
    if memory and memory.get("total_peak_bytes") is not None:
        return memory["total_peak_bytes"] / MIB, "memory_report.json total_peak_bytes"
    return None, None


def collect_run(run_dir, max_scenes: int = MAX_SCENES_PER_RUN, max_points: int = MAX_POINTS_PER_SCENE) -> dict:
    """One run folder -> the report's dict (see the module docstring for the files read).

    Keys: name, path, kind (test | predict | train | profile | ...), class_names, palette [[r, g, b]],
    metrics (None without metrics.json), confusion [K][K + 1] | None, curves {name: [[it, value]]},
    memory (memory_report.json) | None, parameters, iterations, sec_per_iter (mean train/step_time,
    else elapsed / iterations), sec_per_iter_source, peak_memory_mb, peak_memory_source, scenes
    (lib.report.scenes.read_scene dicts, each with "rgb_is_prediction"), scenes_total, predict (the
    predict summary) | None, train_dir.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ValueError(f"{run_dir}: no such run folder")
    summary = read_json(run_dir / "summary.json")
    info = read_json(run_dir / RUN_INFO) or {}
    raw_metrics = read_json(run_dir / "metrics.json")
    predict = read_json(run_dir / "predictions" / "predict_summary.json")
    train_dir = training_dir(run_dir, info, summary)
    train_summary = read_json(train_dir / "summary.json") if train_dir else None
    train_info = (read_json(train_dir / RUN_INFO) or {}) if train_dir else {}
    curves = read_scalars(run_dir / SCALARS)
    if not curves and train_dir:
        curves = read_scalars(train_dir / SCALARS)
    memory = read_json(run_dir / "memory_report.json") or (read_json(train_dir / "memory_report.json")
                                                         if train_dir else None)

    files = scene_files(run_dir)
    scenes = [read_scene(path, max_points) for path in files[:max_scenes]]
    for scene in scenes:
        scene["rgb_is_prediction"] = is_prediction_colour(scene)

    class_names = list((raw_metrics or {}).get("per_class") or {})
    palette = []
    for source in scenes:
        if source["class_names"]:
            class_names = class_names or source["class_names"]
            if len(source["palette"]) == len(class_names):
                palette = source["palette"]
            break
    if not class_names and predict:
        class_names = list(predict.get("class_names") or [])
    if not palette and predict and len(predict.get("palette") or []) == len(class_names):
        palette = [list(map(int, c)) for c in predict["palette"]]
    if not class_names:
        most = max([int(s["pred"].max()) + 1 for s in scenes if s["pred"] is not None and len(s["pred"])] + [0])
        class_names = [f"class {k}" for k in range(most)]
    palette = palette or default_palette(len(class_names))

    iterations = (train_summary or {}).get("iterations") or (summary or {}).get("iterations") or None
    if iterations is None and curves.get("train/loss"):  # a test run written into its training folder
        iterations = int(curves["train/loss"][-1][0])
    sec_per_iter, sec_source = _mean_step_time(curves), "mean of train/step_time"
    if sec_per_iter is None:
        timed = train_summary or summary
        if timed and timed.get("iterations"):
            sec_per_iter, sec_source = timed["elapsed_s"] / timed["iterations"], "elapsed_s / iterations"
        else:
            sec_source = None
    peak, peak_source = _peak_memory_mb(curves, memory)
    kind = "test" if raw_metrics else "predict" if predict else info.get("mode") or (summary or {}).get("mode", "run")
    return {"name": run_dir.name, "path": str(run_dir), "kind": kind, "class_names": class_names,
            "palette": palette, "metrics": _metrics(raw_metrics),
            "confusion": (raw_metrics or {}).get("confusion_matrix"), "curves": curves, "memory": memory,
            "parameters": info.get("parameters", train_info.get("parameters")), "iterations": iterations,
            "sec_per_iter": sec_per_iter, "sec_per_iter_source": sec_source, "peak_memory_mb": peak,
            "peak_memory_source": peak_source, "scenes": scenes, "scenes_total": len(files),
            "predict": predict, "train_dir": str(train_dir) if train_dir else None}
