"""Synthetic scenes written in the raw layouts of ScanNet v2, S3DIS, SemanticKITTI and the folder dataset.

`generate(kind, out_dir, num_scenes, seed=0, **size_kwargs) -> Path` calls the generator of the
registered dataset `kind` (DatasetSpec.generate_synthetic) and writes the raw files so the
whole pipeline (preprocessing, training, evaluation, export) runs without downloads. Output is
deterministic by seed (same seed: byte-identical files) and re-runs skip scenes already complete.
Size knobs per kind: scannet / s3dis / folder `points_per_scene`; semantickitti `azimuth_steps`.
"""
from pathlib import Path

# Bump whenever a change alters the files written for a given seed: caches are keyed by it, so a
# stale synthetic set from an older generator is never reused.
GENERATOR_VERSION = 1


def generate(kind: str, out_dir, num_scenes: int, seed: int = 0, **size_kwargs) -> Path:
    """Write `num_scenes` synthetic scenes of `kind` under `out_dir`; returns out_dir as a Path."""
    from datasets.registry import get_dataset

    spec = get_dataset(kind, key="synthetic kind")
    if num_scenes < 0:
        raise ValueError(f"num_scenes must be >= 0, got {num_scenes}")
    return Path(spec.generate_synthetic(out_dir, num_scenes, seed, **size_kwargs))
