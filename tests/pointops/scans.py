"""PointBatch fixtures for the point-backbone tests: real ScanNet scans voxelized with the
project's voxelizer, one point per voxel at the voxel's mean coordinate (what the engine will feed)."""
import numpy as np
import torch

from lib import IGNORE_INDEX
from lib.structure import PointBatch
from tests.conftest import REAL_DATA

SCANS = REAL_DATA / "scannet" / "scans"


def has_scan(scene: str) -> bool:
    return (SCANS / scene).is_dir()


def read_scan(scene: str):
    """coord float32 [P, 3], color float32 [P, 3] in [-1, 1], label int64 [P] (IGNORE_INDEX = unknown)."""
    from datasets.scannet import read_raw_scene
    arrays, _ = read_raw_scene(scene, "train", SCANS / scene)
    color = arrays["color"].astype(np.float32) / 127.5 - 1.0
    return arrays["coord"], color, arrays["label"].astype(np.int64)


def voxel_points(coord, color, label, voxel_size):
    """Per-voxel mean coordinate and colour, majority label; grid coords as the datasets make them."""
    from datasets.voxelize import voxelize
    vox = voxelize(coord, voxel_size)
    m = len(vox.coords)
    inv = torch.from_numpy(vox.inverse)
    mean = lambda a: torch.zeros(m, a.shape[1]).index_add_(0, inv, torch.from_numpy(a)) / torch.from_numpy(
        vox.counts)[:, None].float()
    lab = torch.from_numpy(label)
    valid = lab != IGNORE_INDEX
    votes = torch.zeros(m, int(lab[valid].max()) + 1 if valid.any() else 1)
    votes.index_put_((inv[valid], lab[valid]), torch.ones(int(valid.sum())), accumulate=True)
    vlabel = torch.where(votes.sum(1) > 0, votes.argmax(1), torch.tensor(IGNORE_INDEX))
    return mean(coord), torch.from_numpy(vox.coords), mean(color), vlabel


def scan_batch(scenes, voxel_size):
    """PointBatch of the given scenes at `voxel_size`, and the voxel labels [N]."""
    parts = [voxel_points(*read_scan(s), voxel_size) for s in scenes]
    sizes = torch.tensor([0] + [len(p[0]) for p in parts])
    batch = PointBatch(torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts]).int(),
                       torch.cat([p[2] for p in parts]), sizes.cumsum(0), voxel_size)
    return batch, torch.cat([p[3] for p in parts])
