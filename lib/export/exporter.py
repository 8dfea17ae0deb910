"""Writes each scene's predictions in the formats the config asks for, named by the dataset meta."""
from pathlib import Path

import numpy as np
import torch

from lib.export.ply import write_ply


def _ply(out_dir, scene, points, pred, meta, labels=None, extra=None, comments=None):
    return write_ply(Path(out_dir) / f"{scene.replace('/', '_')}.ply", points, pred, meta.palette, labels,
                     list(meta.class_names), extra, comments)


def get_writer(fmt: str, meta):
    """The writer of format `fmt`: (out_dir, scene, points [P, 3], pred [P], meta, labels [P] | None) -> Path.
    `ply` is written here; the dataset's benchmark format (meta.benchmark) by meta.benchmark_writer."""
    if fmt == "ply":
        return _ply
    writer = getattr(meta, "benchmark_writer", None)
    if fmt != getattr(meta, "benchmark", None) or writer is None:
        known = ["ply"] + ([meta.benchmark] if writer is not None and getattr(meta, "benchmark", None) else [])
        raise ValueError(f"no export writer for format {fmt!r} in dataset {meta.name!r}; known: {', '.join(known)}")
    return writer


class PredictionExporter:
    """Per-scene export to `<run_dir>/<cfg.folder>/<format>/`.

    Args:
        cfg: ExportConfig (ply, ply_labels, benchmark, folder).
        meta: DatasetMeta (palette, benchmark, benchmark_writer, and what that writer reads).
        run_dir: the run's output folder.
    Raises ValueError (one line) when benchmark files are asked for a dataset that names no format.
    """

    def __init__(self, cfg, meta, run_dir: str | Path):
        self.meta = meta
        self.ply_labels = cfg.ply_labels
        self.root = Path(run_dir) / cfg.folder
        self.formats = ["ply"] if cfg.ply else []
        if cfg.benchmark:
            if not meta.benchmark:
                raise ValueError(f"export.benchmark=true but dataset {meta.name!r} has no benchmark format")
            get_writer(meta.benchmark, meta)  # a missing writer fails here, before any scene is predicted
            self.formats.append(meta.benchmark)

    def folder(self, fmt: str) -> Path:
        return self.root / fmt

    def add(self, scene: str, points, pred, labels=None, extra=None, comments=None) -> list[Path]:
        """Writes one scene in every enabled format.

        Args:
            scene: scene id (the item's `scene`).
            points: float [P, 3] original points; pred: int [P] class per original point;
            labels: optional int [P] ground truth (IGNORE_INDEX = unknown), used by the PLY only;
            extra: optional name -> float [P] fields and comments: header lines, both PLY only.
        Returns the files written.
        """
        points, pred = _numpy(points), _numpy(pred)
        labels = _numpy(labels) if (labels is not None and self.ply_labels) else None
        out = []
        for fmt in self.formats:
            writer = get_writer(fmt, self.meta)
            more = {"extra": extra, "comments": comments} if fmt == "ply" else {}
            out.append(writer(self.folder(fmt), scene, points, pred, self.meta, labels, **more))
        return out


def _numpy(x) -> np.ndarray:
    return x.detach().cpu().numpy() if torch.is_tensor(x) else np.asarray(x)
