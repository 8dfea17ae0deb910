"""Datasets: raw files -> preprocessed scenes -> voxelized, augmented items that keep the point -> voxel map.

Every dataset is a `DatasetSpec` (datasets/spec.py) registered by name (datasets/registry.py);
`build_dataset` looks `data.dataset` up there. `build_dataset` imports torch and the dataset modules
on first call, so that importing a light submodule (datasets.synthetic, datasets.errors) stays cheap.
"""
from datasets.errors import DataFormatError, DatasetRootError, UnknownDatasetError
from datasets.registry import dataset_names, get_dataset, register_dataset
from datasets.spec import DatasetSpec


def build_dataset(data_cfg, split: str, seed: int = 0, rank: int = 0):
    """The dataset of `split` described by `data_cfg` (lib.config.schema_data.DataConfig); see
    datasets/build.py."""
    from datasets.build import build_dataset as build

    return build(data_cfg, split, seed=seed, rank=rank)


__all__ = ["DataFormatError", "DatasetRootError", "DatasetSpec", "UnknownDatasetError", "build_dataset",
           "dataset_names", "get_dataset", "register_dataset"]
