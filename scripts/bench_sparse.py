"""Benchmark one 3x3x3 submanifold convolution on every importable engine (CPU or CUDA).

A surface-like cloud (a room's floor, ceiling and walls plus a few spheres, sampled at voxel
resolution: about 9 neighbours per voxel, rows in voxelizer order) of about --voxels voxels, at
C=32 and C=64. Per engine, the median over --repeats runs, in seconds, of:
  map_s      building the kernel map: (fresh input + forward) - (forward with the map cached),
             the median of the differences of back-to-back runs
  fwd_s      forward with the map cached, no autograd
  fwd_bwd_s  forward + backward (features and weights) with the map cached; null if impossible
Prints a table and the torch/other-engine ratios of the same run; --json PATH writes them.
On --device cuda each run is timed with CUDA events (start/end recorded around it, then a
synchronize) after --warmup untimed rounds; --amp bf16|fp16 runs the convolutions under autocast.

On a shared machine whose load exceeds its cores, OpenMP threads that spin while waiting for a
descheduled partner make every parallel op pay a scheduler time slice; the torch engine (many
short ops) suffers far more than MinkowskiEngine. Compare there with --threads 1, or run with
OMP_WAIT_POLICY=PASSIVE set in the environment. The load average is printed and recorded.

  python scripts/bench_sparse.py [--voxels 160000] [--repeats 5] [--json out.json] [--shuffle] [--threads N]
  python scripts/bench_sparse.py --device cuda [--amp bf16] --json bench_cuda.json
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


AMP = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def engine_cases(engine: str, coords: torch.Tensor, channels: int, device: torch.device, amp: str = "none"):
    """The timed closures of one engine: {"fwd": f, "fresh": f, "fwd_bwd": f or None}, and the reason
    forward+backward is impossible (or None). coords and features live on `device`."""
    torch.manual_seed(0)
    layer = snn.SubMConv3d(channels, channels, 3).to(device)
    coords = coords.to(device)
    feats = torch.randn(len(coords), channels, device=device)
    cached = SparseTensor(feats, coords, engine=engine)

    def autocast():
        return torch.autocast(device.type, dtype=AMP[amp], enabled=AMP[amp] is not None)

    def fwd():
        with torch.no_grad(), autocast():
            layer(cached)

    def fresh():
        with torch.no_grad(), autocast():
            layer(SparseTensor(feats, coords, engine=engine))

    cases = {"fwd": fwd, "fresh": fresh, "fwd_bwd": None}
    reason = why_not(engine, device, training=True)
    if reason is None:
        leaf = feats.clone().requires_grad_()
        x = SparseTensor(leaf, coords, engine=engine)
        upstream = torch.randn(len(coords), channels, device=device)

        def fwd_bwd():
            with autocast():
                out = layer(x).feats
            out.float().backward(upstream)
            leaf.grad = layer.weight.grad = None

        cases["fwd_bwd"] = fwd_bwd
    return cases, reason


def timer(device: torch.device):
    """seconds(fn): wall time of fn() on CPU; on CUDA the time between two events recorded around it
    on the current stream (the GPU's time, not the launch's), after a synchronize."""
    if device.type != "cuda":
        def seconds(fn):
            t0 = time.perf_counter()
            fn()
            return time.perf_counter() - t0
        return seconds

    def seconds(fn):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        return start.elapsed_time(end) / 1e3
    return seconds


def run_interleaved(cases: dict, repeats: int, seconds=None, warmup: int = 1) -> dict:
    """Median seconds per (engine, channels, case), plus "map": the median of the paired per-repeat
    differences fresh - fwd (run back to back, so slow drifts in load cancel). Engines take turns
    within each repeat, so a burst of load from other processes on this shared machine hits all
    of them alike. The first `warmup` rounds are not timed (lazy imports, first allocations, CUDA
    kernel selection); `seconds(fn)` times one call (default: wall clock)."""
    seconds = seconds or timer(torch.device("cpu"))
    times = {key: {name: [] for name, fn in c.items() if fn is not None} for key, c in cases.items()}
    for rep in range(warmup + repeats):
        for key, c in cases.items():
            for name, fn in c.items():
                if fn is None:
                    continue
                elapsed = seconds(fn)
                if rep >= warmup:
                    times[key][name].append(elapsed)
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
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="where the convolutions run")
    parser.add_argument("--amp", default="none", choices=tuple(AMP), help="autocast dtype (default none: fp32)")
    parser.add_argument("--warmup", type=int, help="untimed rounds first (default 1 on CPU, 3 on CUDA)")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is visible to torch")
    warmup = args.warmup if args.warmup is not None else (3 if device.type == "cuda" else 1)
    if args.threads:
        torch.set_num_threads(args.threads)
    coords = surface_cloud(args.voxels)
    if args.shuffle:
        coords = coords[torch.randperm(len(coords), generator=torch.Generator().manual_seed(1))]
    load = os.getloadavg()[0]
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{torch.get_num_threads()} threads"
    print(f"{len(coords)} voxels, torch {torch.__version__}, {where}, amp {args.amp}, "
          f"median of {args.repeats} after {warmup} warm-up, load average {load:.1f} on {os.cpu_count()} cores, "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}")

    cases, reasons, skipped = {}, {}, {}
    for engine in args.engines:
        reason = why_not(engine, device, training=False)
        if reason is not None:
            skipped[engine] = reason
            continue
        for c in args.channels:
            case, reason = engine_cases(engine, coords, c, device, args.amp)
            try:  # an engine that cannot run this case (e.g. a dtype it lacks) is reported, not fatal
                case["fwd"]()
            except Exception as exc:
                skipped[engine] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                break
            cases[(engine, c)], reasons[(engine, c)] = case, reason
    medians = run_interleaved(cases, args.repeats, timer(device), warmup)
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

    ratios = {}
    by_key = {(r["engine"], r["channels"]): r for r in results}
    for other in sorted({r["engine"] for r in results} - {"torch"}):
        for c in args.channels:
            t, m = by_key.get(("torch", c)), by_key.get((other, c))
            if t and m:
                ratio = {k: (t[k] / m[k] if t[k] is not None and m[k] else None)
                         for k in ("map_s", "fwd_s", "fwd_bwd_s")}
                ratios.setdefault(other, []).append({"channels": c, **ratio})
                print(f"torch/{other} C={c}: " + "  ".join(
                    f"{k[:-2]} {'n/a' if v is None else f'{v:.2f}x'}" for k, v in ratio.items()))

    if args.json:
        args.json.write_text(json.dumps({"voxels": len(coords), "device": str(device), "amp": args.amp,
                                         "threads": torch.get_num_threads(), "warmup": warmup,
                                         "load_average": load, "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
                                         "repeats": args.repeats, "results": results,
                                         "ratios_torch_over": ratios,
                                         "ratios_torch_over_minkowski": ratios.get("minkowski", []),
                                         "skipped": skipped}, indent=2))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
