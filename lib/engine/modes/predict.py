"""`--mode predict`: a trained model applied to new scans (`--input` files or folders), any size.

What the model needs comes from its checkpoint's model card (lib/engine/model_card.py): model,
classes, voxel size, features. A checkpoint without a card needs `--config` (the recipe it was
trained with), from which the card is rebuilt. The scans are read by `run.build_scans` (main.py
hands in datasets.scans.ScanDataset: the readers preprocessing uses), voxelized as test mode
does, and predicted view by view (eval.tta), each view tile by tile when its voxels exceed the
budget (lib/engine/tiling.py): `predict.max_voxels`, else the most voxels whose inference peak
fits `data.memory_budget` by the points model fitted on the scan (lib.profiler.fit), else whole.
Files are shared round-robin among ranks; every rank writes its own scans' files.

Writes under <run>/<export.folder>/ (default predictions/):
  ply/<scan>.ply            test mode's PLY (x y z, class colours, pred, label/error when labelled)
                            plus `confidence` (the highest class probability, 0..1)
  labels/<scan>.txt         one label value per point: the card's raw ids (classes.yaml ids, NYU40
                            ids, KITTI ids), the class index where the dataset has none
  probabilities/<scan>.npy  float16 [P, K] when predict.probabilities
  predict_summary.json      per scan: points, voxels, tiles, views, seconds, peak bytes, histogram
and <run>/metrics.json (test mode's scores) over the scans that carry labels.
"""
import logging
import time
from pathlib import Path

import numpy as np
import torch

from lib import IGNORE_INDEX
from lib.engine import dist as D
from lib.engine.checkpoint import CheckpointError, check_state_dict, load_checkpoint, model_state
from lib.engine.data import SeededItems
from lib.engine.inference import tta_views
from lib.engine.inputs import for_model
from lib.engine.model_card import build_card, check_card
from lib.engine.modes.evaluate import plot_title, write_report
from lib.engine.precision import autocast, precision_name
from lib.engine.signals import check_signal
from lib.engine.tiling import plan_tiles, tiled_logits
from lib.io import atomic_write_json

log = logging.getLogger("voxseg")

SUMMARY = "predict_summary.json"
PROBE_VOXELS = 20_000  # the inference points model is fitted on crops of at most this many voxels


def run(run):
    """Returns (scores over the labelled scans or None, 0 iterations)."""
    return predict(run), 0


def model_card(run, ckpt: dict) -> dict:
    """The checkpoint's card, or one rebuilt from `--config` for a checkpoint written before cards."""
    if ckpt.get("card") is None and run.config_given:
        dataset = run.build_dataset(run.cfg.data, "train")
        log.info("%s has no model card: using the recipe's (%s, voxel size %g m)", run.weights, dataset.meta.name,
                 run.cfg.data.voxel_size)
        return build_card(run.cfg, dataset.meta, dataset)
    return check_card(ckpt.get("card"), run.weights)


def build_model(run, card: dict, ckpt: dict):
    from lib.config import ModelConfig

    model = run.build_model(ModelConfig(card["model"]["name"], dict(card["model"]["args"])),
                            int(card["in_channels"]), int(card["num_classes"]))
    state = model_state(ckpt)
    check_state_dict(model, state, run.weights)
    model.load_state_dict(state)
    return model.to(run.device).eval()


def voxel_budget(run, model, item, collate_fn, make_input) -> tuple[int, dict]:
    """(max voxels per forward, how it was chosen) for this run: predict.max_voxels, else the fit
    of the inference peak against data.memory_budget, else 0 (the whole scan)."""
    cfg = run.cfg
    if cfg.predict.max_voxels > 0:
        return cfg.predict.max_voxels, {"source": "predict.max_voxels"}
    if not cfg.data.memory_budget:
        return 0, {"source": "whole scan (no predict.max_voxels or data.memory_budget)"}
    from lib.profiler.fit import measure_forward, measure_points_model
    from lib.units import parse_bytes

    budget = parse_bytes(cfg.data.memory_budget)
    batch = collate_fn([item])
    if len(batch["coords"]) > PROBE_VOXELS:
        from lib.profiler.fit import crop_batch
        batch = crop_batch(batch, PROBE_VOXELS / len(batch["coords"]))
    points, samples = measure_points_model(model, batch, make_input, run.device, measure=measure_forward)
    try:
        limit = points.largest_fitting(budget)
    except ValueError as exc:
        from lib.config import ConfigError
        raise ConfigError(f"data.memory_budget={cfg.data.memory_budget}: {exc} (the model's weights and "
                          "a forward's fixed cost)") from None
    return limit, {"source": "data.memory_budget", "budget_bytes": budget, **points.as_dict(),
                   "fitted_on": samples}


class ScanPredictor:
    """One model, its inputs and bands; `__call__(items, index)` -> (item, probs [P, K], record)."""

    def __init__(self, run, model, card):
        cfg = run.cfg
        self.run, self.model = run, model
        self.make_input = for_model(run.make_input, model)
        self.views = tta_views(cfg.eval.tta)
        voxel = float(card["voxel_size"])
        self.overlap = int(np.ceil(cfg.predict.tile_overlap / voxel))
        self.context = int(np.ceil(cfg.predict.tile_context / voxel))
        self.max_voxels, self.budget = None, None
        self.meter = cfg.predict.measure_memory or bool(cfg.data.memory_budget)

    def __call__(self, items, index: int, bar=None):
        """items: a `lib.engine.data.SeededItems` over the scans (test mode's item access)."""
        from lib.engine.memory_hook import reset_rss_high_water, rss_high_water_bytes
        from lib.profiler.report import static_bytes

        reset_rss_high_water()
        start = time.perf_counter()
        plain = self.views == [(0.0, False, 1.0)]
        total, first, tiles_done, peaks = None, None, [], []
        for rotation_z, flip_x, scale in self.views:
            item = items.item(index) if plain else items.get_view(index, rotation_z, flip_x, scale)
            if self.max_voxels is None:  # fitted once per run, on the first scan
                self.max_voxels, self.budget = voxel_budget(self.run, self.model, item, self.run.collate_fn,
                                                            self.make_input)
                log.info("predict: at most %s voxels per forward (%s)", self.max_voxels or "all",
                         self.budget["source"])
            tiles = plan_tiles(item["coords"], self.max_voxels, self.overlap, self.context)
            tiles_done.append(len(tiles))
            tile_bar = None
            if bar is not None and len(tiles) > 1:
                from tqdm import tqdm
                tile_bar = tqdm(total=len(tiles), desc="tiles", unit="tile", leave=False, position=1,
                                dynamic_ncols=True)
            try:
                with autocast(self.run.cfg.train.amp, torch.device(self.run.device)):  # test mode's precision
                    logits = tiled_logits(self.model, item, tiles, self.run.collate_fn, self.make_input,
                                          self.run.device, on_tile=self._on_tile(peaks, tile_bar))
            finally:
                if tile_bar is not None:
                    tile_bar.close()
            probs = logits.softmax(dim=1)[torch.from_numpy(np.asarray(item["inverse"], dtype=np.int64))]
            if first is None:
                first, total = item, probs
            else:
                total += probs
        probs = total / len(self.views)
        record = {"voxels": int(len(first["coords"])), "tiles": max(tiles_done), "views": len(self.views),
                  "seconds": round(time.perf_counter() - start, 3),
                  "rss_peak_bytes": rss_high_water_bytes()}
        if peaks:
            record["peak_bytes"] = int(max(peaks)) + static_bytes(self.model)
        return first, probs, record

    def _on_tile(self, peaks: list, bar):
        from lib.profiler.meter import peak_bytes

        def on_tile(i, forward):
            if self.meter:
                out = {}
                peaks.append(peak_bytes(lambda: out.setdefault("logits", forward()), self.run.device))
                logits = out["logits"]
            else:
                logits = forward()
            if bar is not None:
                bar.update(1)
            return logits
        return on_tile


def _label_values(pred: np.ndarray, raw_ids: list) -> np.ndarray:
    return np.asarray(raw_ids, dtype=np.int64)[pred] if len(raw_ids) else pred


def write_scan(run, exporter, dataset, index, item, probs, card) -> dict:
    """Writes one scan's files; returns its histogram and confidence figures."""
    cfg = run.cfg
    name = dataset.scene_ids[index]
    confidence, pred = probs.max(dim=1)
    pred = pred.numpy().astype(np.int64)
    labels = np.asarray(item["point_labels"], dtype=np.int64)
    labelled = bool((labels != IGNORE_INDEX).any())
    origin = dataset.records[index]["origin"]
    exporter.add(name, np.asarray(item["points"]), pred, labels if labelled else None,
                 extra={"confidence": confidence.numpy()},
                 comments=[f"origin {origin[0]:.6f} {origin[1]:.6f} {origin[2]:.6f}",
                           f"source {dataset.paths[index]}"])
    out = exporter.root
    (out / "labels").mkdir(parents=True, exist_ok=True)
    np.savetxt(out / "labels" / f"{name}.txt", _label_values(pred, card["raw_ids"]), fmt="%d")
    if cfg.predict.probabilities:
        (out / "probabilities").mkdir(parents=True, exist_ok=True)
        np.save(out / "probabilities" / f"{name}.npy", probs.numpy().astype(np.float16))
    counts = np.bincount(pred, minlength=len(card["class_names"]))
    return {"class_histogram": {n: int(c) for n, c in zip(card["class_names"], counts)},
            "mean_confidence": round(float(confidence.mean()), 4), "labelled_points": int((labels != IGNORE_INDEX).sum())}


def _gather(records: list) -> list:
    if not D.is_dist():
        return records
    import torch.distributed as dist
    box = [None] * D.get_world_size()
    dist.all_gather_object(box, records)
    return [r for part in box for r in part]


def predict(run):
    cfg = run.cfg
    if not run.weights:
        raise CheckpointError("--mode predict needs --weights <checkpoint>")
    if not run.inputs:
        raise CheckpointError("--mode predict needs --input <file or folder> ...")
    ckpt = load_checkpoint(run.weights)
    card = model_card(run, ckpt)
    dataset = run.build_scans(run.inputs, card, cfg)
    model = build_model(run, card, ckpt)
    del ckpt
    run.watch_model(model)
    predictor = ScanPredictor(run, model, card)
    items = SeededItems(dataset, cfg.seed)

    from lib.export import PredictionExporter
    from lib.metrics import SegEvaluator
    exporter = PredictionExporter(cfg.export, dataset.meta, run.run_dir)
    evaluator = SegEvaluator.from_meta(dataset.meta, cfg.eval.convention, run.device)
    mine = list(range(run.rank, len(dataset), run.world))
    log.info("predicting %d scan(s) with %s (%s, %s, voxel %g m, features %s) on %d process(es)", len(dataset),
             run.weights, card["model"]["name"], card["dataset"], card["voxel_size"], ", ".join(card["features"]),
             run.world)
    records = []
    bar = None
    if cfg.train.progress and D.is_main():
        from tqdm import tqdm
        bar = tqdm(total=len(mine), desc="predict", unit="scan", dynamic_ncols=True, leave=True)
    try:
        for index in mine:
            check_signal()  # a SIGTERM stops between scans (lib/engine/signals.py)
            if bar is not None:
                bar.set_description_str(f"predict {dataset.scene_ids[index]}")
            item, probs, record = predictor(items, index, bar)  # a tile bar under the scan bar
            probs = probs.cpu()
            record = {"scan": dataset.scene_ids[index], **dataset.records[index], **record,
                      **write_scan(run, exporter, dataset, index, item, probs, card)}
            labels = torch.as_tensor(np.asarray(item["point_labels"]), dtype=torch.int64)
            if record["labelled"] and bool((labels != IGNORE_INDEX).any()):
                pred = probs.argmax(dim=1)
                evaluator.update(pred.to(run.device), labels.to(run.device))
                record["scores"] = _scan_scores(dataset.meta, cfg, pred, labels)
            records.append(record)
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    records = _gather(records)
    evaluator.all_reduce()
    if not D.is_main():
        return None
    records.sort(key=lambda r: dataset.scene_ids.index(r["scan"]))
    points = sum(r["points"] for r in records)
    seconds = sum(r["seconds"] for r in records)
    summary = {"weights": str(run.weights), "model": card["model"]["name"], "dataset": card["dataset"],
               "voxel_size": card["voxel_size"], "features": card["features"], "processes": run.world,
               "precision": precision_name(cfg.train.amp, run.device),
               "max_voxels": predictor.max_voxels, "budget": predictor.budget,
               "tile_overlap_m": cfg.predict.tile_overlap, "tile_context_m": cfg.predict.tile_context,
               "scans": records, "points": points, "seconds": round(seconds, 3),
               "seconds_per_million_points": round(seconds / max(points, 1) * 1e6, 3)}
    atomic_write_json(exporter.root / SUMMARY, summary)
    from lib.report.records import count_parameters, write_run_info
    write_run_info(run.run_dir, mode="predict", weights=str(Path(run.weights).resolve()),
                   parameters=count_parameters(model))
    log.info("predicted %d scan(s), %d points in %.1f s (%.2f s per million points): %s", len(records), points,
             seconds, summary["seconds_per_million_points"], exporter.root)
    scores = None
    if evaluator.confusion.valid().sum() > 0:
        scores = evaluator.save(run.run_dir, cfg.eval.plots, cfg.eval.normalize_plot,
                                plot_title(run.run_dir, run.weights), extra={"precision": summary["precision"]})
        if cfg.eval.table:
            log.info("scores over the labelled scans\n%s", evaluator.table())
    write_report(run.run_dir)
    return scores



def _scan_scores(meta, cfg, pred, labels) -> dict:
    from lib.metrics import SegEvaluator
    one = SegEvaluator.from_meta(meta, cfg.eval.convention, "cpu")
    one.update(pred.cpu(), labels)
    s = one.compute().to_dict()
    return {"miou": s["mIoU"], "macc": s["mAcc"], "allacc": s["allAcc"]}
