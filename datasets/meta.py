"""What downstream code (loss, metrics, export) needs to know about a dataset, without reading it."""
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np


@dataclass
class DatasetMeta:
    """Static description of a dataset.

    palette: uint8 [num_classes, 3] RGB colour per class.
    raw_ids: int64 [num_classes], the official id written to benchmark files for each class
      (ScanNet: NYU40 id; SemanticKITTI: learning_map_inv of class k + 1); empty when no benchmark.
    benchmark: name of the dataset's benchmark format, also the export sub-folder (None: none).
    convention: evaluation convention of lib.metrics ('nan_absent' | 'zero_absent').
    scene_info: scene id -> what the benchmark writer needs (KITTI: sequence, frame; ScanNet: scan).
    benchmark_writer: (out_dir, scene, points [P, 3], pred [P], meta, labels [P] | None) -> Path, the
      dataset's writer of `benchmark` files (DatasetSpec.write_benchmark); None without a benchmark.
    label_values: per class, the label values of a raw file that mean it (ScanNet: its NYU40 id;
      SemanticKITTI: every semantic id learning_map sends there; folder: classes.yaml `ids`);
      None: [[raw_ids[k]]]. What `--mode predict` scores labels found in a new file with.
    label_field: the point-file column holding labels (folder: classes.yaml `label_field`).
    columns: names of a plain table's columns (folder: classes.yaml `columns`; None: by width).
    """

    name: str
    class_names: list[str]
    in_channels: int
    palette: np.ndarray
    raw_ids: np.ndarray
    benchmark: Optional[str]
    convention: str
    scene_info: dict[str, dict] = field(default_factory=dict)
    benchmark_writer: Optional[Callable] = None
    label_values: Optional[list[list[int]]] = None
    label_field: str = "label"
    columns: Optional[list[str]] = None

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def values_of_classes(self) -> list[list[int]]:
        """label_values, or one value per class (its raw id, else its index) when not set."""
        if self.label_values is not None:
            return [list(map(int, v)) for v in self.label_values]
        if len(self.raw_ids):
            return [[int(v)] for v in self.raw_ids]
        return [[k] for k in range(self.num_classes)]
