"""Memory reports of models on a real scan, side by side (lib.profiler for each model x voxel size).

    python scripts/profile_memory.py --ply ../shared/data/real/scannet/scans/scene0000_00/scene0000_00_vh_clean_2.ply \
        --models Res16UNet14A Res16UNet34C --voxel-sizes 0.05 0.02 --device cpu --out outputs/profile_memory

Each run prints lib.profiler's per-module table and writes <out>/<model>_<voxel>m/memory_report.json
(with the points->memory fit) and memory_timeline.png; the script ends with one comparison table and
<out>/summary.json, every peak also as a ratio to the first run (the reference). The scan is voxelized
here (one point per occupied cell, colour features in [0, 1]); a batch holds --batch copies of it.
"""
import argparse
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere: lib, models live at the root


def voxelize(ply: Path, voxel_size: float, batch: int = 1) -> dict:
    """A collated batch (datasets/collate.py keys) of `batch` copies of the scan: coords int32 [N, 4]
    (batch, x, y, z), feats float32 [N, 3] (RGB in [0, 1], of each cell's first point), labels (zeros),
    offsets, and per copy inverse / points (metres) / point_labels; `first` [N] the row of each cell's
    first point."""
    from plyfile import PlyData

    try:
        vertex = PlyData.read(str(ply))["vertex"].data
    except Exception as exc:  # plyfile raises several types for missing or damaged files
        raise SystemExit(f"{ply}: cannot read a PLY vertex element ({type(exc).__name__}: {exc})")
    names = set(vertex.dtype.names)
    if not {"x", "y", "z"} <= names:
        raise SystemExit(f"{ply}: vertex has no x, y, z")
    xyz = np.stack([vertex["x"], vertex["y"], vertex["z"]], axis=1).astype(np.float64)
    rgb = (np.stack([vertex["red"], vertex["green"], vertex["blue"]], axis=1) / 255.0
           if {"red", "green", "blue"} <= names else np.ones_like(xyz))
    cells = np.floor((xyz - xyz.min(axis=0)) / voxel_size).astype(np.int64)
    cells, first, inverse = np.unique(cells, axis=0, return_index=True, return_inverse=True)
    n = len(cells)
    coords = np.concatenate([np.concatenate([np.full((n, 1), b), cells], axis=1) for b in range(batch)])
    inverse = torch.from_numpy(inverse.ravel())
    return {"coords": torch.from_numpy(coords).to(torch.int32),
            "feats": torch.from_numpy(np.concatenate([rgb[first]] * batch)).float(),
            "labels": torch.zeros(n * batch, dtype=torch.int64),
            "offsets": torch.arange(batch + 1, dtype=torch.int64) * n,
            "inverse": [inverse] * batch, "points": [torch.from_numpy(xyz).float()] * batch,
            "point_labels": [torch.zeros(len(xyz), dtype=torch.int64)] * batch,
            "scene": [ply.stem] * batch, "first": torch.from_numpy(np.tile(first, batch))}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--ply", type=Path, required=True, help="a scan with vertex x, y, z (and red, green, blue)")
    p.add_argument("--models", nargs="+", default=["Res16UNet14A"], help="registered model names")
    p.add_argument("--voxel-sizes", nargs="+", type=float, default=[0.05], help="metres")
    p.add_argument("--batch", type=int, default=1, help="copies of the scan in one batch")
    p.add_argument("--classes", type=int, default=20)
    p.add_argument("--device", default="cpu")
    p.add_argument("--engine", default="torch", help="sparse engine of the input (lib.sparse)")
    p.add_argument("--depth", type=int, default=1, help="module depth of the report rows")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--out", type=Path, default=Path("outputs/profile_memory"))
    args = p.parse_args(argv)

    from lib.profiler import MIB, MemoryProfiler, format_report
    from lib.profiler.fit import measure_points_model, train_pass
    from lib.profiler.timeline import save_png
    from lib.sparse import SparseTensor
    from models import build_model

    def make_input(batch, device):
        return SparseTensor(batch["feats"].to(device), batch["coords"].to(device), engine=args.engine)

    rows = []
    for voxel_size in args.voxel_sizes:
        batch = voxelize(args.ply, voxel_size, args.batch)
        for name in args.models:
            torch.manual_seed(0)
            model = build_model(SimpleNamespace(name=name, args={}), 3, args.classes).to(args.device).train()
            run_dir = args.out / f"{name}_{voxel_size:g}m"
            run_dir.mkdir(parents=True, exist_ok=True)
            print(f"\n== {name}, voxel {voxel_size:g} m, {len(batch['coords'])} voxels")
            for _ in range(args.warmup):
                train_pass(model, make_input(batch, args.device))
            model.zero_grad(set_to_none=True)
            with MemoryProfiler(model, args.device, depth=args.depth) as prof:
                train_pass(model, make_input(batch, args.device))
            model.zero_grad(set_to_none=True)
            r = prof.report()
            points, samples = measure_points_model(model, batch, make_input, args.device)
            r["points_model"] = points.as_dict()
            r["points_samples"] = [{"voxels": n, "bytes": b} for n, b in samples]
            (run_dir / "memory_report.json").write_text(json.dumps(r, indent=1))
            save_png(prof, run_dir / "memory_timeline.png", f"{name}, {r['voxels']} voxels, {voxel_size:g} m")
            print(format_report(r))
            rows.append({"model": name, "voxel_size_m": voxel_size, "voxels": r["voxels"],
                         "parameters_bytes": r["parameters_bytes"], "saved_bytes": r["saved_bytes"],
                         "total_peak_bytes": r["total_peak_bytes"], "points_model": r["points_model"],
                         "report": str(run_dir)})
    ref = rows[0]
    for row in rows:
        row["peak_ratio_to_first"] = row["total_peak_bytes"] / max(ref["total_peak_bytes"], 1)
    head = (f"{'model':<16} {'voxel m':>7} {'voxels':>8} {'saved MiB':>10} {'peak MiB':>9} "
            f"{'KiB/voxel':>9} {'ratio':>6}")
    print("\n" + head + "\n" + "-" * len(head))
    for row in rows:
        print(f"{row['model']:<16} {row['voxel_size_m']:>7g} {row['voxels']:>8d} {row['saved_bytes'] / MIB:>10.1f} "
              f"{row['total_peak_bytes'] / MIB:>9.1f} {row['points_model']['bytes_per_voxel'] / 1024:>9.2f} "
              f"{row['peak_ratio_to_first']:>6.2f}")
    args.out.mkdir(parents=True, exist_ok=True)
    summary = {"device": args.device, "engine": args.engine, "ply": str(args.ply), "batch": args.batch,
               "reference": f"{ref['model']} at {ref['voxel_size_m']:g} m", "runs": rows}
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(f"\nwrote {args.out / 'summary.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
