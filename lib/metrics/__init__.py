"""Evaluation on the original points: confusion matrix, conventions, tables and plots."""
from lib.metrics.confusion import ConfusionMatrix
from lib.metrics.evaluator import SegEvaluator, resolve_convention
from lib.metrics.points import raw_to_class, split_batch_points, voxel_to_points
from lib.metrics.scores import CONVENTIONS, Scores, compute_scores, format_table, register_convention_alias

__all__ = [
    "CONVENTIONS", "ConfusionMatrix", "Scores", "SegEvaluator", "compute_scores", "format_table",
    "raw_to_class", "register_convention_alias", "resolve_convention", "split_batch_points", "voxel_to_points",
]
