"""Benchmark neighborhood_aggregate against the naive [N, K, C] gather on real ScanNet geometry.

Input: ScanNet scans (<data>/scannet/scans/*/*_vh_clean_2.ply) voxelized at --voxel-size, one scan
per batch item, until about --voxels voxels; neighbour table of --region; random v [N, C],
softmax-normalised a [N, K, H] and w [K, C]. For both implementations, the median over --repeats
of (seconds):
  fwd_s      forward, no autograd
  fwd_bwd_s  forward + backward (gradients to v, a and w)
and peak memory (bytes above what was live before the pass; inputs and the table not counted):
  fwd_peak_bytes, fwd_bwd_peak_bytes
Peak memory comes from lib.profiler's meters: on CPU torch.profiler(profile_memory=True), every
CPU-allocator allocation and free replayed into a live-bytes curve; on CUDA
torch.cuda.max_memory_allocated. CUDA times use CUDA events after --warmup untimed runs.
Prints a table and the naive/fused ratios of the same run; --json PATH writes it all.

  python scripts/bench_neighborhood.py [--voxels 100000] [--channels 32] [--heads 4] [--region cube3]
      [--device cpu|cuda] [--repeats 3] [--threads 1] [--chunk-rows N] [--json out.json]
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lib.profiler.meter import MemoryTimeline, median_seconds, peak_bytes  # noqa: E402
from lib.sparse import KernelRegion, SparseTensor, neighborhood_aggregate  # noqa: E402
from lib.sparse import nn as snn  # noqa: E402
from scripts.real_scans import real_scan_coords  # noqa: E402

REGIONS = {"cube3": KernelRegion.cube(3), "cube5": KernelRegion.cube(5), "cube3d2": KernelRegion.cube(3, 2),
           "cross5": KernelRegion.cross(5), "plane_xy": KernelRegion.plane("xy")}


def naive(v, nbr, a, w):
    """The reference: every pair gathered into [N, K, C] tensors that autograd keeps."""
    c, h = v.shape[1], a.shape[2]
    pairs = v[nbr.clamp(min=0)]
    coef = (a * nbr.ge(0).unsqueeze(-1)).repeat_interleave(c // h, dim=2) * w
    return (pairs * coef).sum(1)


def timed(fn, device, repeats, warmup):
    for _ in range(warmup):
        fn()
    return median_seconds(fn, device, repeats)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, default=Path(os.environ.get("VOXSEG_REAL_DATA", ROOT.parent / "shared" / "data" / "real")))
    p.add_argument("--voxels", type=int, default=100000)
    p.add_argument("--voxel-size", type=float, default=0.05)
    p.add_argument("--channels", type=int, default=32)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--region", choices=sorted(REGIONS), default="cube3")
    p.add_argument("--device", default="cpu")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--chunk-rows", type=int, default=None)
    p.add_argument("--skip-naive", action="store_true", help="the naive path needs ~5 [N, K, C] tensors of memory")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    if args.channels % args.heads:
        raise SystemExit(f"--heads {args.heads} must divide --channels {args.channels}")
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    region = REGIONS[args.region]

    coords = real_scan_coords(args.data, args.voxel_size, args.voxels).to(device)
    x = SparseTensor(torch.zeros(len(coords), 1, device=device), coords, engine="torch")
    t0 = time.perf_counter()
    nbr = snn.neighbor_table(x, region)
    table_s = time.perf_counter() - t0
    n, k = nbr.shape
    g = torch.Generator(device="cpu").manual_seed(0)
    v = torch.randn(n, args.channels, generator=g).to(device).requires_grad_()
    a = torch.randn(n, k, args.heads, generator=g).softmax(1).to(device).requires_grad_()
    w = torch.randn(k, args.channels, generator=g).to(device).requires_grad_()
    up = torch.randn(n, args.channels, generator=g).to(device)

    impls = {"fused": lambda: neighborhood_aggregate(v, nbr, a, w, chunk_rows=args.chunk_rows)}
    if not args.skip_naive:
        impls["naive"] = lambda: naive(v, nbr, a, w)
    results, method = {}, None
    for name, f in impls.items():
        def fwd():
            with torch.no_grad():
                f()

        def fwd_bwd():
            v.grad = a.grad = w.grad = None
            torch.autograd.backward(f(), up)

        results[name] = {"fwd_s": timed(fwd, device, args.repeats, args.warmup),
                         "fwd_bwd_s": timed(fwd_bwd, device, args.repeats, args.warmup)}
        results[name]["fwd_peak_bytes"] = peak_bytes(fwd, device)
        method = MemoryTimeline(device).method
        v.grad = a.grad = w.grad = None
        results[name]["fwd_bwd_peak_bytes"] = peak_bytes(fwd_bwd, device)
        v.grad = a.grad = w.grad = None

    cols = ["fwd_s", "fwd_bwd_s", "fwd_peak_bytes", "fwd_bwd_peak_bytes"]
    print(f"N={n} voxels ({int(coords[:, 0].max()) + 1} scans at {args.voxel_size} m), region {region.name} K={k}, "
          f"occupied pairs {(nbr >= 0).float().mean().item():.1%}, C={args.channels}, H={args.heads}, "
          f"device {device}, threads {args.threads}, table {table_s:.3f} s, load {os.getloadavg()[0]:.1f}")
    print(f"{'impl':8s}" + "".join(f"{c:>20s}" for c in cols))
    for name, r in results.items():
        print(f"{name:8s}" + "".join(f"{r[c]:20.4f}" if c.endswith("_s") else f"{r[c] / 2 ** 20:16.1f} MiB"
                                     for c in cols))
    ratios = {}
    if "naive" in results:
        ratios = {c: results["naive"][c] / max(results["fused"][c], 1e-12) for c in cols}
        print("naive/fused " + "  ".join(f"{c}={r:.2f}" for c, r in ratios.items()))
    if args.json:
        report = {"voxels": n, "region": region.name, "K": k, "channels": args.channels, "heads": args.heads,
                  "device": str(device), "threads": args.threads, "chunk_rows": args.chunk_rows,
                  "table_s": table_s, "load_avg": os.getloadavg()[0], "memory_method": method,
                  "results": results, "naive_over_fused": ratios}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
