"""Small random voxel clouds and a narrow Res16UNet for the model tests."""
import numpy as np
import torch

from lib.sparse import SparseTensor
from models.blocks import Bottleneck
from models.res16unet import Res16UNetBase


class TinyUNet(Res16UNetBase):
    """Res16UNet14 shape with narrow stages, so CPU tests take well under a second a pass."""

    INIT_DIM = 8
    LAYERS = (1, 1, 1, 1, 1, 1, 1, 1)
    PLANES = (8, 16, 16, 16, 16, 16, 8, 8)


class TinyBottleneckUNet(Res16UNetBase):
    """Res16UNet50 shape (Bottleneck blocks, 4x expansion) with narrow stages."""

    BLOCK = Bottleneck
    INIT_DIM = 8
    LAYERS = (1, 2, 1, 1, 1, 1, 1, 2)
    PLANES = (4, 4, 8, 8, 8, 4, 4, 4)


def random_cloud(n_per_scene, batch_size=1, extent=24, channels=3, seed=0):
    """Unique voxels drawn from an extent^3 cube per scene.

    Returns coords int32 [N, 4] (batch, x, y, z), grouped by batch, and feats float32 [N, channels].
    The extent spans more than 16 voxels so every level of the U-Net (stride up to 16) has several
    voxels and k2s2 down/up sampling merges and splits cells.
    """
    gen = torch.Generator().manual_seed(seed)
    rows = []
    for b in range(batch_size):
        cells = torch.randperm(extent ** 3, generator=gen)[:n_per_scene]
        xyz = torch.stack([cells // extent ** 2, (cells // extent) % extent, cells % extent], dim=1)
        rows.append(torch.cat([torch.full((n_per_scene, 1), b), xyz], dim=1))
    coords = torch.cat(rows).to(torch.int32)
    feats = torch.randn(coords.shape[0], channels, generator=gen)
    return coords, feats


def sparse_input(coords, feats, engine="torch"):
    """A fresh stride-1 SparseTensor (its own context, so no kernel map is shared between calls)."""
    return SparseTensor(feats, coords, engine=engine)


def real_scan_voxels(ply_path, voxel_size):
    """Voxelise a real ScanNet `_vh_clean_2.ply`: one row per occupied voxel, batch 0.

    Returns coords int32 [N, 4] (0, x, y, z) with x, y, z = floor(xyz / voxel_size) (metres in,
    voxel units out) and feats float32 [N, 3]: the voxel's mean colour, scaled to [-0.5, 0.5].
    """
    from plyfile import PlyData

    vertex = PlyData.read(str(ply_path))["vertex"]
    xyz = torch.from_numpy(np.stack([vertex["x"], vertex["y"], vertex["z"]], 1).astype(np.float64))
    rgb = torch.from_numpy(np.stack([vertex["red"], vertex["green"], vertex["blue"]], 1).astype(np.float32))
    cells, inverse = torch.unique(torch.floor(xyz / voxel_size).long(), dim=0, return_inverse=True)
    colour = torch.zeros(len(cells), 3).index_add_(0, inverse, rgb)
    colour /= torch.bincount(inverse, minlength=len(cells)).unsqueeze(1)
    coords = torch.cat([torch.zeros(len(cells), 1, dtype=torch.long), cells], 1).to(torch.int32)
    return coords, colour / 255.0 - 0.5
