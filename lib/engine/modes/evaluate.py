"""`--mode test`: full-resolution predictions of every scene of `train.test_split` (optionally
voted over test-time views), scored by the evaluator when labels exist, exported by
lib/export. Scenes are shared round-robin among ranks. Each scene's prediction files are written
as soon as it is predicted, by the rank that predicted it (disjoint files), so memory stays at one
scene whatever the split's size; confusion matrices are summed over ranks and rank 0 alone writes
the scores, plots and summary."""
import logging
from pathlib import Path

import numpy as np
import torch

from lib import IGNORE_INDEX
from lib.engine.data import SeededItems
from lib.engine.dist import is_main
from lib.engine.inference import predict_scene, tta_views
from lib.engine.inputs import for_model
from lib.engine.precision import autocast, precision_name
from lib.engine.signals import check_signal
from lib.engine.state_check import load_weights

log = logging.getLogger("voxseg")


def plot_title(run_dir, weights) -> str:
    """The plots' heading: this run's folder name and the checkpoint (its run folder / file name)."""
    weights = Path(weights)
    return f"{Path(run_dir).name} - {weights.parent.name}/{weights.name}" if weights.parent.name else \
        f"{Path(run_dir).name} - {weights.name}"


def run(run):
    """Returns (the evaluator's score dict or None when the split has no labels, 0 iterations)."""
    return evaluate(run), 0


def evaluate(run):
    cfg, device = run.cfg, run.device
    if not run.weights:
        raise ValueError("--mode test needs --weights <checkpoint>")
    dataset = run.build_dataset(cfg.data, cfg.train.test_split)
    meta = dataset.meta
    model = run.build_model(cfg.model, meta.in_channels, meta.num_classes).to(device)
    load_weights(model, run.weights)
    make_input = for_model(run.make_input, model)
    run.watch_model(model)
    views = tta_views(cfg.eval.tta)
    if len(views) > 1 and not hasattr(dataset, "get_view"):
        raise ValueError(f"eval.tta is enabled but dataset {meta.name!r} has no get_view()")
    log.info("testing %s on split %r: %d scenes, %d view(s) each", run.weights,
             cfg.train.test_split, len(dataset), len(views))

    from lib.export import PredictionExporter
    from lib.metrics import SegEvaluator
    exporter = PredictionExporter(cfg.export, meta, run.run_dir)  # fails before any prediction if misconfigured
    evaluator = SegEvaluator.from_meta(meta, cfg.eval.convention, device)
    items = SeededItems(dataset, cfg.seed)
    indices = range(run.rank, len(dataset), run.world)
    for i, index in enumerate(indices):
        check_signal()  # a SIGTERM stops between scenes (lib/engine/signals.py)
        # the recipe's precision, as the validation of the run that trained these weights
        item, probs = predict_scene(model, items, index, views, run.collate_fn, make_input, device,
                                    lambda: autocast(cfg.train.amp, device))
        pred = probs.argmax(dim=1)
        # Items may hold numpy arrays or tensors (collate converts; here there is no collate).
        labels = torch.as_tensor(np.asarray(item["point_labels"]), dtype=torch.int64)
        has_labels = bool((labels != IGNORE_INDEX).any())
        evaluator.update(pred, labels.to(device))
        exporter.add(item["scene"], np.asarray(item["points"]), pred.cpu().numpy().astype(np.int64),
                     labels.numpy() if has_labels else None,
                     extra={"confidence": probs.max(dim=1).values.cpu().numpy()})
        if is_main() and (i + 1) % 10 == 0:
            log.info("predicted %d/%d scenes on rank 0", i + 1, len(indices))
    evaluator.all_reduce()
    if not is_main():
        return None
    from lib.report.records import count_parameters, write_run_info
    write_run_info(run.run_dir, mode="test", weights=str(Path(run.weights).resolve()),
                   parameters=count_parameters(model), split=cfg.train.test_split)
    scores = None
    if evaluator.confusion.valid().sum() == 0:
        log.info("split %r has no labels: predictions exported, nothing scored", cfg.train.test_split)
    else:
        scores = evaluator.save(run.run_dir, cfg.eval.plots, cfg.eval.normalize_plot,
                                plot_title(run.run_dir, run.weights),
                                extra={"precision": precision_name(cfg.train.amp, device)})
        if cfg.eval.table:
            log.info("test scores\n%s", evaluator.table())
    write_report(run.run_dir)
    return scores


def write_report(run_dir) -> None:
    """<run>/report.html (lib/report). A report that cannot be written is logged, never fatal: the
    scores and predictions are already on disk."""
    from lib.report import write_run_report
    try:
        log.info("report written to %s", write_run_report(run_dir))
    except (ValueError, OSError) as exc:
        log.warning("no report.html: %s", exc)
