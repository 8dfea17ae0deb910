"""Datasets: preprocessed scenes -> voxelized, augmented items that keep the point -> voxel map.

`build_dataset` imports torch and the dataset modules on first call, so that importing a light
submodule (datasets.synthetic, datasets.errors) stays cheap.
"""
from datasets.errors import DataFormatError, DatasetRootError


def build_dataset(data_cfg, split: str, seed: int = 0, rank: int = 0):
    """The dataset of `split` described by `data_cfg` (lib.config.schema_data.DataConfig); see
    datasets/build.py."""
    from datasets.build import build_dataset as build

    return build(data_cfg, split, seed=seed, rank=rank)


__all__ = ["build_dataset", "DataFormatError", "DatasetRootError"]
