"""voxseg: 3D semantic segmentation of point clouds on a sparse-convolution core.

Installing this distribution installs voxseg's dependencies only. The code runs from the repository
root: `lib`, `models` and `datasets` are generic names that would shadow other packages (HuggingFace
`datasets`, for one) if they went into site-packages, so they deliberately do not.
"""
from setuptools import setup

setup(
    name="voxseg",
    version="0.1.0",
    description="3D point-cloud semantic segmentation: voxelized loaders, sparse-conv backbones, DDP training",
    python_requires=">=3.10",
    packages=[],
    install_requires=[
        # 2.4: torch.amp.is_autocast_available and the per-device torch.is_autocast_enabled /
        # get_autocast_dtype (the sparse convolutions under autocast); 2.3 would already be needed
        # for torch.amp.GradScaler("cuda"). The suite runs on 2.13 (CPU).
        "torch>=2.4",
        "numpy>=1.24",
        "scipy>=1.10",
        "plyfile>=1.0",
        "tensorboardX>=2.6",
        "PyYAML>=6.0",
        "tqdm>=4.60",
        "matplotlib>=3.7",
    ],
    extras_require={
        # The CPU wheel runs forward only (its backward needs CUDA); on GPU machines install the
        # CUDA wheel matching your toolkit instead, e.g. `pip install spconv-cu126`.
        "spconv": ["spconv>=2.3"],
        # open3d needs the system library libusb-1.0-0 to import (apt-get install -y libusb-1.0-0).
        "viz": ["open3d>=0.18"],
        # LAS / LAZ point files (the folder dataset and --mode predict); imported only for those files.
        "las": ["laspy[lazrs]>=2.5"],
        "test": ["pytest>=7"],
    },
)
