"""Benchmark one 3x3x3 submanifold convolution on every importable engine (CPU).

A surface-like cloud (a room's floor, ceiling and walls plus a few spheres, sampled at voxel
resolution: about 9 neighbours per voxel, rows in voxelizer order) of about --voxels voxels, at
C=32 and C=64. Per engine, the median over --repeats runs, in seconds, of:
  map_s      building the kernel map: (fresh input + forward) - (forward with the map cached),
             the median of the differences of back-to-back runs
  fwd_s      forward with the map cached, no autograd
  fwd_bwd_s  forward + backward (features and weights) with the map cached; null if impossible
Prints a table and the torch/minkowski ratios of the same run; --json PATH writes them.

On a shared machine whose load exceeds its cores, OpenMP threads that spin while waiting for a
descheduled partner make every parallel op pay a scheduler time slice; the torch engine (many
short ops) suffers far more than MinkowskiEngine. Compare there with --threads 1, or run with
OMP_WAIT_POLICY=PASSIVE set in the environment. The load average is printed and recorded.

  python scripts/bench_sparse.py [--voxels 160000] [--repeats 5] [--json out.json] [--shuffle] [--threads N]
"""

import argparse
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lib.sparse import ENGINES, SparseTensor  # noqa: E402
from lib.sparse import nn as snn  # noqa: E402
from lib.sparse.engines import why_not  # noqa: E402


def surface_cloud(n_target: int, seed: int = 0) -> torch.Tensor:
    """int32 [N, 4] voxels (batch 0) on a room's six faces plus four spheres, N close to n_target.

    Rows are sorted by (x, y, z), the order torch.unique / np.unique voxelizers return.
    """
    g = torch.Generator().manual_seed(seed)
    side = int(math.sqrt(n_target / 3.5))  # floor + ceiling = 2 side^2, four walls = 4 side * side/3
    height = side // 3
    a, b = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
    a, b = a.reshape(-1), b.reshape(-1)
    faces = [torch.stack([a, b, torch.zeros_like(a)], 1), torch.stack([a, b, torch.full_like(a, height)], 1)]
    a, b = torch.meshgrid(torch.arange(side), torch.arange(height), indexing="ij")
    a, b = a.reshape(-1), b.reshape(-1)
    lo, hi = torch.zeros_like(a), torch.full_like(a, side - 1)
    faces += [torch.stack([a, lo, b], 1), torch.stack([a, hi, b], 1),
              torch.stack([lo, a, b], 1), torch.stack([hi, a, b], 1)]
    for _ in range(4):
        r = 0.1 * height * (1 + torch.rand(1, generator=g).item())
        centre = torch.rand(3, generator=g) * torch.tensor([side - 2 * r, side - 2 * r, height - 2 * r]) + r
        d = torch.randn(int(60 * r * r), 3, generator=g)
        faces.append(torch.floor(centre + r * d / d.norm(dim=1, keepdim=True)).long())
    xyz = torch.unique(torch.cat(faces), dim=0)
    return torch.cat([torch.zeros(len(xyz), 1, dtype=torch.long), xyz], 1).to(torch.int32)


def engine_cases(engine: str, coords: torch.Tensor, channels: int):
    """The timed closures of one engine: {"fwd": f, "fresh": f, "fwd_bwd": f or None}, and the reason
    forward+backward is impossible (or None)."""
    torch.manual_seed(0)
    layer = snn.SubMConv3d(channels, channels, 3)
    feats = torch.randn(len(coords), channels)
    cached = SparseTensor(feats, coords, engine=engine)

    def fwd():
        with torch.no_grad():
            layer(cached)

    def fresh():
        with torch.no_grad():
            layer(SparseTensor(feats, coords, engine=engine))

    cases = {"fwd": fwd, "fresh": fresh, "fwd_bwd": None}
    reason = why_not(engine, "cpu", training=True)
    if reason is None:
        leaf = feats.clone().requires_grad_()
        x = SparseTensor(leaf, coords, engine=engine)
        upstream = torch.randn(len(coords), channels)

        def fwd_bwd():
            layer(x).feats.backward(upstream)
            leaf.grad = layer.weight.grad = None

        cases["fwd_bwd"] = fwd_bwd
    return cases, reason


def run_interleaved(cases: dict, repeats: int) -> dict:
    """Median seconds per (engine, channels, case), plus "map": the median of the paired per-repeat
    differences fresh - fwd (run back to back, so slow drifts in load cancel). Engines take turns
    within each repeat, so a burst of load from other processes on this shared machine hits all
    of them alike."""
    times = {key: {name: [] for name, fn in c.items() if fn is not None} for key, c in cases.items()}
    for rep in range(repeats + 1):  # repeat 0 is a warm-up: lazy imports, first allocations
        for key, c in cases.items():
            for name, fn in c.items():
                if fn is None:
                    continue
                t0 = time.perf_counter()
                fn()
                if rep:
                    times[key][name].append(time.perf_counter() - t0)
    medians = {}
    for key, t in times.items():
        medians[key] = {name: statistics.median(v) for name, v in t.items()}
        medians[key]["map"] = max(statistics.median(a - b for a, b in zip(t["fresh"], t["fwd"])), 0.0)
    return medians


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--voxels", type=int, default=160_000, help="target voxel count (default 160000)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per figure, median taken (default 5)")
    parser.add_argument("--channels", type=int, nargs="+", default=[32, 64])
    parser.add_argument("--engines", nargs="+", default=list(ENGINES), choices=ENGINES)
    parser.add_argument("--shuffle", action="store_true", help="shuffle the rows (worst memory locality)")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    coords = surface_cloud(args.voxels)
    if args.shuffle:
        coords = coords[torch.randperm(len(coords), generator=torch.Generator().manual_seed(1))]
    load = os.getloadavg()[0]
    print(f"{len(coords)} voxels, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"median of {args.repeats}, load average {load:.1f} on {os.cpu_count()} cores, "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}")

    cases, reasons, skipped = {}, {}, {}
    for engine in args.engines:
        reason = why_not(engine, "cpu", training=False)
        if reason is not None:
            skipped[engine] = reason
            continue
        for c in args.channels:
            cases[(engine, c)], reasons[(engine, c)] = engine_cases(engine, coords, c)
    medians = run_interleaved(cases, args.repeats)
    results = []
    for (engine, c), m in medians.items():
        row = {"engine": engine, "channels": c, "map_s": m["map"], "fwd_s": m["fwd"],
               "fwd_bwd_s": m.get("fwd_bwd")}
        if reasons[(engine, c)]:
            row["fwd_bwd_reason"] = reasons[(engine, c)]
        results.append(row)

    def fmt(v):
        return "     n/a" if v is None else f"{v:8.4f}"

    print(f"{'engine':<12}{'C':>4}{'map_s':>9}{'fwd_s':>9}{'fwd_bwd_s':>10}")
    for r in results:
        print(f"{r['engine']:<12}{r['channels']:>4}{fmt(r['map_s'])}{fmt(r['fwd_s'])} {fmt(r['fwd_bwd_s'])}"
              + (f"  ({r['fwd_bwd_reason']})" if r.get("fwd_bwd_reason") else ""))
    for engine, reason in skipped.items():
        print(f"{engine:<12} skipped: {reason}")

    ratios = []
    by_key = {(r["engine"], r["channels"]): r for r in results}
    for c in args.channels:
        t, m = by_key.get(("torch", c)), by_key.get(("minkowski", c))
        if t and m:
            ratio = {k: (t[k] / m[k] if t[k] is not None and m[k] else None) for k in ("map_s", "fwd_s", "fwd_bwd_s")}
            ratios.append({"channels": c, **ratio})
            print(f"torch/minkowski C={c}: map {ratio['map_s']:.2f}x  fwd {ratio['fwd_s']:.2f}x  "
                  f"fwd+bwd {ratio['fwd_bwd_s']:.2f}x")

    if args.json:
        args.json.write_text(json.dumps({"voxels": len(coords), "threads": torch.get_num_threads(),
                                         "load_average": load, "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
                                         "repeats": args.repeats, "results": results,
                                         "ratios_torch_over_minkowski": ratios, "skipped": skipped}, indent=2))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
