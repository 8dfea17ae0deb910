"""Benchmark input shared by the block and neighbourhood benchmarks: real ScanNet scans voxelised."""
from pathlib import Path

import numpy as np
import torch


def real_scan_coords(root: Path, voxel_size: float, n_target: int) -> torch.Tensor:
    """int32 [N, 4] (batch, x, y, z) voxels of successive ScanNet scans under root/scannet/scans (each
    shifted to its minimum corner, one batch item per scan) until N >= n_target or the scans run out.
    Raises SystemExit naming the folder when it holds no scan."""
    from plyfile import PlyData

    paths = sorted((root / "scannet" / "scans").glob("*/*_vh_clean_2.ply"))
    if not paths:
        raise SystemExit(f"{root / 'scannet' / 'scans'}: no *_vh_clean_2.ply scans (set --data or VOXSEG_REAL_DATA)")
    parts, total = [], 0
    for b, path in enumerate(paths):
        v = PlyData.read(str(path))["vertex"]
        xyz = np.stack([v["x"], v["y"], v["z"]], 1).astype(np.float64)
        cells = np.unique(np.floor((xyz - xyz.min(0)) / voxel_size).astype(np.int64), axis=0)
        parts.append(np.concatenate([np.full((len(cells), 1), b), cells], 1))
        total += len(cells)
        if total >= n_target:
            break
    return torch.from_numpy(np.concatenate(parts)).to(torch.int32)
