"""PNG figures of an evaluation: the confusion matrix and a per-class IoU bar chart (matplotlib, Agg)."""
from pathlib import Path

import numpy as np
import torch

from lib.metrics.scores import DESCRIPTIONS, Scores


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # headless: the servers have no display
    import matplotlib.pyplot as plt

    return plt


ABSENT = "(absent)"  # appended to the name of a class with no ground-truth point


def plot_confusion(valid: torch.Tensor, class_names: list[str], path: str | Path, normalize: bool = True,
                   title: str = "") -> Path:
    """Writes the confusion matrix as a PNG (confusion_figure)."""
    plt = _pyplot()
    return _save(confusion_figure(valid, class_names, normalize, title), plt, path)


def confusion_figure(valid: torch.Tensor, class_names: list[str], normalize: bool = True, title: str = ""):
    """The confusion matrix figure: each cell shows its point count (colour: the row fraction when
    `normalize`, else the count); a class without ground-truth points is named "<name> (absent)"
    and its row hatched; `title` (the run and checkpoint) heads it.

    Args:
        valid: int [K, K + 1] rows = ground truth, columns = prediction (+ "invalid" column).
        class_names: K names.
        normalize: colour each row divided by its sum (per-class recall) instead of raw counts.
    """
    plt = _pyplot()
    conf = valid.detach().cpu().to(torch.float64).numpy()
    k = conf.shape[0]
    if conf[:, k].sum() == 0:  # the invalid column only earns its place when something landed there
        conf = conf[:, :k]
    columns = list(class_names) + (["invalid"] if conf.shape[1] > k else [])
    shown = conf
    if normalize:
        rows = conf.sum(axis=1, keepdims=True)
        shown = np.divide(conf, rows, out=np.zeros_like(conf), where=rows > 0)
    size = max(5.5, 0.5 * len(columns) + 2.0)
    fig, ax = plt.subplots(figsize=(size, size * k / len(columns) + 1.0))
    image = ax.imshow(shown, cmap="Blues", vmin=0.0, vmax=1.0 if normalize else None)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="row fraction" if normalize else "points")
    top = shown.max() if shown.size else 0.0
    for (i, j), count in np.ndenumerate(conf):
        if count:  # empty cells stay blank: the eye finds the counts that matter
            ax.text(j, i, f"{int(count)}", ha="center", va="center", fontsize=5,
                    color="white" if shown[i, j] > 0.6 * top else "black")
    absent = conf.sum(axis=1) == 0
    for i in np.flatnonzero(absent):
        ax.add_patch(plt.Rectangle((-0.5, i - 0.5), conf.shape[1], 1, fill=False, hatch="///",
                                   edgecolor="lightgray", linewidth=0))
    ax.set_xticks(range(len(columns)), columns, rotation=90, fontsize=7)
    ax.set_yticks(range(k), [f"{n} {ABSENT}" if a else n for n, a in zip(class_names, absent)], fontsize=7)
    ax.set_xlabel("prediction")
    ax.set_ylabel("ground truth")
    heading = "confusion matrix (points" + (", colour: rows normalised)" if normalize else ")")
    ax.set_title(f"{title}\n{heading}" if title else heading, fontsize=9)
    return fig


def plot_iou_bars(scores: Scores, path: str | Path, title: str = "") -> Path:
    """Writes a bar chart of per-class IoU (percent) with the mIoU as a line (iou_figure)."""
    return _save(iou_figure(scores, title), _pyplot(), path)


def iou_figure(scores: Scores, title: str = ""):
    """Per-class IoU bars; the title names `title` (the run and checkpoint) and the convention."""
    plt = _pyplot()
    k = len(scores.class_names)
    fig, ax = plt.subplots(figsize=(max(5.0, 0.35 * k + 2.0), 4.0))
    values = np.nan_to_num(scores.iou, nan=0.0) * 100.0
    bars = ax.bar(range(k), values, color="tab:blue")
    for bar, v in zip(bars, scores.iou):
        if v != v:  # NaN: the class was absent, say so rather than drawing a zero
            bar.set_color("lightgray")
            ax.text(bar.get_x() + bar.get_width() / 2, 1.0, "n/a", ha="center", fontsize=6, rotation=90)
    if scores.miou == scores.miou:
        ax.axhline(scores.miou * 100.0, color="tab:red", linestyle="--", label=f"mIoU {scores.miou * 100:.1f}")
        ax.legend(loc="upper right", fontsize=7)
    ax.set_xticks(range(k), scores.class_names, rotation=90, fontsize=7)
    ax.set_ylim(0, 100)
    ax.set_ylabel("IoU (%)")
    ax.set_title(f"{title}\n{DESCRIPTIONS[scores.convention]}" if title else DESCRIPTIONS[scores.convention],
                 fontsize=8)
    return fig


def _save(fig, plt, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
