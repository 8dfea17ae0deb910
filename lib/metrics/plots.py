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


def plot_confusion(valid: torch.Tensor, class_names: list[str], path: str | Path, normalize: bool = True) -> Path:
    """Writes the confusion matrix as a PNG.

    Args:
        valid: int [K, K + 1] rows = ground truth, columns = prediction (+ "invalid" column).
        class_names: K names.
        path: PNG file to write (its folder is created).
        normalize: show each row divided by its sum (per-class recall) instead of raw counts.
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
    size = max(4.0, 0.4 * len(columns) + 2.0)
    fig, ax = plt.subplots(figsize=(size, size * k / len(columns) + 1.0))
    image = ax.imshow(shown, cmap="Blues", vmin=0.0, vmax=1.0 if normalize else None)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="row fraction" if normalize else "points")
    ax.set_xticks(range(len(columns)), columns, rotation=90, fontsize=7)
    ax.set_yticks(range(k), class_names, fontsize=7)
    ax.set_xlabel("prediction")
    ax.set_ylabel("ground truth")
    ax.set_title("confusion matrix" + (" (rows normalised)" if normalize else ""), fontsize=9)
    return _save(fig, plt, path)


def plot_iou_bars(scores: Scores, path: str | Path) -> Path:
    """Writes a bar chart of per-class IoU (percent) with the mIoU as a line; the title names the convention."""
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
    ax.set_title(DESCRIPTIONS[scores.convention], fontsize=8)
    return _save(fig, plt, path)


def _save(fig, plt, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
