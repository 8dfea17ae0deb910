"""Per-class IoU / accuracy and their means under a named evaluation convention.

All conventions read the same confusion matrix (see lib.metrics.confusion): points whose
ground truth is not a valid class are skipped, and a prediction outside the valid classes is a
miss (a false negative of the ground-truth class, a false positive of no class). Per-class IoU is
tp / (tp + fp + fn) and per-class accuracy tp / ground-truth points of the class (NaN if none;
mAcc is its NaN-mean) in both. They differ in what an absent class scores and what allAcc counts:

- `nan_absent`: a class absent from both ground truth and prediction is NaN and left out of mIoU;
  allAcc = correct points / scored points. (ScanNet's evaluate_semantic_label.py; with official
  ids, `raw_to_class` makes non-valid ground truth skipped and non-valid predictions misses.)
- `zero_absent`: the layout with class 0 = ignore slot ((C + 1) x (C + 1), as np_ioueval of
  semantic-kitti-api): an absent class scores 0 and mIoU is the mean over all C classes; allAcc =
  correct points / points predicted as a valid class (a prediction in the ignore slot leaves the
  denominator, as np_ioueval's getacc does).

A dataset declares its convention (DatasetMeta.convention, used by `auto`). Aliases: `standard`
means nan_absent, and each registered dataset's name means its convention (old recipes said
`eval.convention: <dataset>`); see `register_convention_alias`.
"""
from dataclasses import dataclass

import numpy as np
import torch

from lib.config.errors import ConfigError
from lib.config.validate import suggest

CONVENTIONS = ("nan_absent", "zero_absent")

DESCRIPTIONS = {
    "nan_absent": "nan_absent: classes absent from GT and prediction are NaN, excluded from mIoU; "
                  "non-valid GT skipped, non-valid prediction = miss",
    "zero_absent": "zero_absent: class 0 = ignore layout; GT ignore dropped, prediction of ignore = miss "
                   "(and not counted by allAcc), absent classes 0, mean over all classes",
}

ALIASES = {"standard": "nan_absent"}


def register_convention_alias(alias: str, convention: str) -> None:
    """Let `alias` stand for `convention` in eval.convention (the datasets registry adds each
    dataset's name)."""
    if convention not in CONVENTIONS:
        raise ValueError(f"convention alias {alias!r}: unknown convention {convention!r} "
                         f"(choose one of {', '.join(CONVENTIONS)})")
    if alias not in CONVENTIONS:
        ALIASES[alias] = convention


def canonical_convention(name: str) -> str:
    """A convention name or alias -> one of CONVENTIONS; anything else raises ConfigError naming
    eval.convention with the closest valid name."""
    if name in CONVENTIONS:
        return name
    if name in ALIASES:
        return ALIASES[name]
    choices = ["auto", *CONVENTIONS, *sorted(ALIASES)]
    raise ConfigError(f"unknown evaluation convention {name!r} for 'eval.convention'{suggest(name, choices)} "
                      f"(choose auto, {', '.join(CONVENTIONS)} or an alias: {', '.join(sorted(ALIASES))})")


@dataclass
class Scores:
    """Scores of one evaluation. Arrays have shape [K]; fractions in [0, 1]."""

    convention: str
    class_names: list[str]
    iou: np.ndarray
    acc: np.ndarray
    gt_points: np.ndarray  # int64 [K] ground-truth points per class
    miou: float
    macc: float
    allacc: float
    scored_points: int
    skipped_points: int  # ground truth outside the valid classes

    def to_dict(self) -> dict:
        """JSON-ready dict; NaN becomes None."""
        def clean(v):
            return None if v != v else float(v)

        return {
            "convention": self.convention,
            "convention_description": DESCRIPTIONS[self.convention],
            "mIoU": clean(self.miou),
            "mAcc": clean(self.macc),
            "allAcc": clean(self.allacc),
            "scored_points": self.scored_points,
            "skipped_points": self.skipped_points,
            "per_class": {
                name: {"iou": clean(i), "acc": clean(a), "gt_points": int(n)}
                for name, i, a, n in zip(self.class_names, self.iou, self.acc, self.gt_points)
            },
        }


def compute_scores(valid: torch.Tensor, convention: str, class_names: list[str], skipped: int = 0) -> Scores:
    """Scores from the valid rows of a confusion matrix.

    Args:
        valid: int [K, K + 1], rows = ground-truth class, columns = predicted class, column K =
            prediction outside the valid classes.
        convention: one of CONVENTIONS (or an alias).
        class_names: K names.
        skipped: points not scored (ground truth outside the valid classes), only reported.
    """
    convention = canonical_convention(convention)
    conf = valid.detach().cpu().to(torch.float64).numpy()
    k = conf.shape[0]
    if conf.shape != (k, k + 1) or len(class_names) != k:
        raise ValueError(f"compute_scores: matrix {conf.shape} and {len(class_names)} class names do not match")
    tp = np.diag(conf[:, :k])
    gt = conf.sum(axis=1)  # includes misses into column K
    predicted = conf[:, :k].sum(axis=0)  # column K is nobody's false positive
    union = gt + predicted - tp
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, tp / union, np.nan)
        acc = np.where(gt > 0, tp / gt, np.nan)
    total = gt.sum()
    if convention == "zero_absent":
        iou = np.nan_to_num(iou, nan=0.0)
        miou = float(iou.mean())
        counted = conf[:, :k].sum()  # np_ioueval getacc: predictions of the ignore slot leave the denominator
    else:
        miou = float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan")
        counted = total
    macc = float(np.nanmean(acc)) if np.isfinite(acc).any() else float("nan")
    allacc = float(tp.sum() / counted) if counted > 0 else float("nan")
    return Scores(convention, list(class_names), iou, acc, gt.astype(np.int64), miou, macc, allacc,
                  int(total), int(skipped))


def format_table(scores: Scores) -> str:
    """A fixed-width text table for logs: one line per class, then the means and the convention."""
    width = max([len(n) for n in scores.class_names] + [7])
    lines = [f"{'class':<{width}}  {'IoU':>6}  {'Acc':>6}  {'GT points':>10}"]
    lines.append("-" * len(lines[0]))
    for name, i, a, n in zip(scores.class_names, scores.iou, scores.acc, scores.gt_points):
        lines.append(f"{name:<{width}}  {_pct(i):>6}  {_pct(a):>6}  {n:>10d}")
    lines.append("-" * len(lines[0]))
    lines.append(f"{'mean':<{width}}  {_pct(scores.miou):>6}  {_pct(scores.macc):>6}  {scores.scored_points:>10d}")
    lines.append(f"mIoU {_pct(scores.miou)}  mAcc {_pct(scores.macc)}  allAcc {_pct(scores.allacc)}  "
                 f"(skipped {scores.skipped_points} points with no valid GT)")
    lines.append(f"convention: {DESCRIPTIONS[scores.convention]}")
    return "\n".join(lines)


def _pct(v: float) -> str:
    return "nan" if v != v else f"{100.0 * v:.2f}"
