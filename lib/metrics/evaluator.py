"""The segmentation evaluator: per-point scores on the original points, under a stated convention."""
from collections.abc import Mapping
from pathlib import Path

import torch

from lib.io import atomic_write_json
from lib.metrics.confusion import ConfusionMatrix
from lib.metrics.plots import plot_confusion, plot_iou_bars
from lib.metrics.points import split_batch_points
from lib.metrics.scores import Scores, canonical_convention, compute_scores, format_table


def resolve_convention(convention: str, meta=None) -> str:
    """`auto` -> the dataset meta's `convention` (or `nan_absent` when the meta names none); an
    alias -> its convention; an unknown name raises ConfigError (lib.metrics.scores)."""
    if convention == "auto":
        convention = getattr(meta, "convention", None) or "nan_absent"
    return canonical_convention(convention)


class SegEvaluator:
    """Accumulates per-point predictions of many scenes, then scores them.

    Args:
        class_names: the K class names (DatasetMeta.class_names).
        convention: `nan_absent` or `zero_absent`, or an alias (see lib.metrics.scores).
        device: where the confusion matrix lives; use the model's device so `update` copies nothing.
    """

    def __init__(self, class_names: list[str], convention: str = "nan_absent", device: torch.device | str = "cpu"):
        self.class_names = list(class_names)
        self.convention = resolve_convention(convention)
        self.confusion = ConfusionMatrix(len(self.class_names), device)

    @classmethod
    def from_meta(cls, meta, convention: str = "auto", device: torch.device | str = "cpu") -> "SegEvaluator":
        """From a DatasetMeta (class_names, convention) and EvalConfig.convention."""
        return cls(meta.class_names, resolve_convention(convention, meta), device)

    def reset(self) -> None:
        self.confusion.reset()

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Adds one scene: pred, target int [P] class indices of the ORIGINAL points (IGNORE_INDEX = unknown)."""
        self.confusion.update(pred, target)

    def update_batch(self, logits: torch.Tensor, batch: Mapping) -> list[torch.Tensor]:
        """Adds every scene of a collated batch, mapping voxel logits to the original points.

        Args:
            logits: [N, K] per voxel, rows in the order of batch["coords"].
            batch: the collate dict; uses `offsets` [B + 1], `inverse` (B x [P_b]) and `point_labels`
                (B x [P_b]).
        Returns:
            B tensors int64 [P_b], the per-point predictions (for export).
        """
        preds = split_batch_points(logits, batch["offsets"], batch["inverse"])
        for pred, labels in zip(preds, batch["point_labels"]):
            self.update(pred, labels)
        return preds

    def all_reduce(self) -> None:
        """Sums the counts over DDP ranks (no-op without torch.distributed); call on every rank before compute."""
        self.confusion.all_reduce()

    def compute(self) -> Scores:
        return compute_scores(self.confusion.valid(), self.convention, self.class_names, self.confusion.skipped)

    def table(self) -> str:
        """Per-class IoU / accuracy text table for logs, ending with the convention used."""
        return format_table(self.compute())

    def save(self, out_dir: str | Path, plots: bool = True, normalize_plot: bool = True, title: str = "",
             extra: dict = None) -> dict:
        """Writes metrics.json (scores + raw confusion matrix + the entries of `extra`, e.g. the
        precision) and, if asked, the two PNGs, headed by `title` (the run and the checkpoint scored).

        Returns the JSON content (a dict).
        """
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        scores = self.compute()
        valid = self.confusion.valid()
        summary = scores.to_dict()
        summary["confusion_matrix"] = valid.tolist()
        summary["confusion_matrix_layout"] = ("rows = ground truth, columns = prediction, "
                                              "last column = invalid prediction")
        summary.update(extra or {})
        atomic_write_json(out_dir / "metrics.json", summary)
        if plots:
            plot_confusion(valid, self.class_names, out_dir / "confusion_matrix.png", normalize_plot, title)
            plot_iou_bars(scores, out_dir / "iou_per_class.png", title)
        return summary
