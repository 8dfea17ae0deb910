"""Schema of the `data` section (owned by the data pipeline).

Lengths are in metres, angles in radians, probabilities in [0, 1].
"""
from dataclasses import dataclass, field
from typing import Any, Literal, Optional, Union


@dataclass
class AugmentConfig:
    enabled: bool = True  # master switch; augmentation only runs on the splits in `DataConfig.augment_splits`
    rotate_x: list[float] = field(default_factory=lambda: [-0.0491, 0.0491])  # [lo, hi] angle about x (pi/64)
    rotate_y: list[float] = field(default_factory=lambda: [-0.0491, 0.0491])  # [lo, hi] angle about y (pi/64)
    rotate_z: list[float] = field(default_factory=lambda: [-3.1416, 3.1416])  # [lo, hi] angle about z (up axis)
    scale: list[float] = field(default_factory=lambda: [0.9, 1.1])  # [lo, hi] isotropic scale factor
    flip_x_p: float = 0.5  # probability of mirroring x
    flip_y_p: float = 0.5  # probability of mirroring y
    translate: list[float] = field(default_factory=lambda: [0.2, 0.2, 0.0])  # max |shift| per axis, metres
    elastic_p: float = 0.0  # probability of elastic distortion (costly: ~10 ms per 150k points)
    elastic_granularity: list[float] = field(default_factory=lambda: [0.2, 0.8])  # noise grid spacing per pass, metres
    elastic_magnitude: list[float] = field(default_factory=lambda: [0.4, 1.6])  # displacement scale per pass
    autocontrast_p: float = 0.2  # probability of chromatic auto-contrast (colour features only)
    autocontrast_blend: Optional[float] = None  # fixed blend factor; None draws it uniformly in [0, 1]
    color_translate_p: float = 0.95  # probability of a random colour shift
    color_translate_ratio: float = 0.1  # colour shift bound as a fraction of the 0-255 range
    color_jitter_p: float = 0.95  # probability of per-point colour noise
    color_jitter_std: float = 0.05  # colour noise std as a fraction of the 0-255 range (uniform noise)
    dropout_p: float = 0.0  # probability of point dropout
    dropout_ratio: float = 0.2  # fraction of points removed when dropout applies


@dataclass
class DataConfig:
    # A registered dataset name (datasets/registry.py), required; checked with a suggestion when the
    # dataset is built, since the config cannot import datasets.
    dataset: str = ""
    root: str = "data/processed"  # preprocessed data (the output of scripts/preprocess.py)
    raw_root: str = ""  # official-layout raw data (named in the hint when `root` is missing)
    synthetic: bool = False  # generate synthetic raw scenes + preprocess them into `cache_dir` on first use
    synthetic_scenes: int = 8  # number of synthetic scenes to generate
    synthetic_seed: int = 0  # seed of the synthetic scene generator (the same on every rank)
    cache_dir: str = "cache/synthetic"  # where synthetic raw and preprocessed data are cached
    voxel_size: float = 0.02  # voxel edge, metres
    quantization: Literal["auto", "random", "mean"] = "auto"  # auto: random on augmented splits, mean otherwise
    splits: dict[str, Any] = field(default_factory=dict)  # split name -> manifest split tags; empty = dataset default
    augment_splits: list[str] = field(default_factory=lambda: ["train"])  # splits that get random augmentation
    batch_size: int = 2  # scenes per batch (per process)
    num_workers: int = 2  # DataLoader worker processes
    # cap on voxels per batch, 0 = no cap (datasets/collate.py); auto = the most that fit memory_budget,
    # measured at start-up (lib/profiler/fit.py)
    limit_numpoints: Union[int, Literal["auto"]] = 0
    memory_budget: str = ""  # memory one process may use: "24GB" (1e9 B) or "22GiB" (2^30 B); for auto
    strict: bool = True  # bad input raises; False skips the scene and counts it
    features: Optional[list[str]] = None  # per-voxel inputs from rgb|normal|xyz|remission|ones; None = dataset default
    augment: AugmentConfig = field(default_factory=AugmentConfig)  # random augmentation of training scenes

    def __post_init__(self):
        from lib.units import parse_bytes

        if self.memory_budget:
            try:
                parse_bytes(self.memory_budget)
            except ValueError as exc:
                raise ValueError(f"data.memory_budget: {exc}") from None
        if self.limit_numpoints == "auto" and not self.memory_budget:
            raise ValueError("data.limit_numpoints: auto needs data.memory_budget (e.g. 24GB)")
        if self.limit_numpoints != "auto" and self.limit_numpoints < 0:
            raise ValueError(f"data.limit_numpoints must be >= 0 or auto, got {self.limit_numpoints}")
