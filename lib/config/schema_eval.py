"""Schema of the `eval`, `export`, `predict` and `profile` sections (owned by evaluation/export)."""
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
class PredictConfig:
    """`--mode predict` (lib/engine/modes/predict.py): new scans through a trained model."""
    # voxels of one forward pass; a larger scan is cut into tiles (lib/engine/tiling.py). 0: as many as
    # data.memory_budget allows (the inference points model measured on the scan), else the whole scan
    max_voxels: int = 0
    tile_overlap: float = 0.5  # metres of each cut kept by both tiles, their logits averaged
    tile_context: float = 1.5  # metres more on each side that a tile reads but does not keep (input only)
    probabilities: bool = False  # also write <scan>.npy: float16 [P, K] class probabilities
    columns: list[str] = field(default_factory=list)  # names of plain .npy/.txt/.csv columns ([]: the model card's, else by width)
    measure_memory: bool = False  # meter each tile's peak (always on when data.memory_budget sets the tiles)


@dataclass
class ProfileConfig:
    warmup: int = 1  # unmeasured training passes first (kernel-map caches, lazy allocations)
    iterations: int = 1  # measured training passes (forward + backward) on the first training batch
    depth: int = 1  # module depth of the report rows (1 = the model's top-level children)
    fit_fractions: list[float] = field(default_factory=lambda: [0.25, 0.5, 0.75, 1.0])  # batch crops for the fit
    json_name: str = "memory_report.json"  # report file written in the output folder (rank 0)
    timeline_png: bool = True  # write memory_timeline.png (memory over time with module spans; matplotlib)
    chrome_trace: bool = False  # write memory_trace.json (module spans + memory counter for chrome://tracing)

    def __post_init__(self):
        if self.warmup < 0 or self.iterations < 1 or self.depth < 1:
            raise ValueError("profile.warmup must be >= 0, profile.iterations and profile.depth >= 1")
        if not all(0.0 < f <= 1.0 for f in self.fit_fractions) or len(set(self.fit_fractions)) < 2:
            raise ValueError(f"profile.fit_fractions must hold two or more distinct fractions in (0, 1], "
                             f"got {self.fit_fractions}")
