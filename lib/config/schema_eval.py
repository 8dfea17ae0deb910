"""Schema of the `eval`, `export` and `profile` sections (owned by evaluation/export)."""
from dataclasses import dataclass, field


@dataclass
class TTAConfig:
    enabled: bool = False  # vote over augmented views of each scene at test time
    rotations: int = 1  # views rotated about +Z by 360/rotations degrees each
    flips: list[str] = field(default_factory=list)  # axes mirrored in extra views, e.g. ["x", "y"]
    scales: list[float] = field(default_factory=lambda: [1.0])  # isotropic scale factors of the views


@dataclass
class EvalConfig:
    # auto (the dataset's own), nan_absent or zero_absent (lib/metrics/scores.py), or an alias (standard,
    # a dataset's name); checked with a suggestion when the evaluator is built.
    convention: str = "auto"
    tta: TTAConfig = field(default_factory=TTAConfig)  # test-time augmentation
    plots: bool = True  # write the confusion-matrix and per-class IoU PNGs
    normalize_plot: bool = True  # confusion-matrix PNG shows rows normalised to 1 (recall)
    table: bool = True  # log the per-class IoU / accuracy text table


@dataclass
class ExportConfig:
    ply: bool = True  # write a coloured PLY per scene
    ply_labels: bool = True  # add `label` and `error` fields to the PLY where GT is known
    benchmark: bool = False  # write the dataset's official benchmark files (meta.benchmark)
    folder: str = "predictions"  # sub-folder of the run's output folder


@dataclass
class ProfileConfig:
    warmup: int = 1  # unmeasured passes first (kernel-map caches, lazy allocations)
    inference: bool = True  # also measure a no-grad forward in eval mode
    json_name: str = "memory_profile.json"  # file written in the output folder
