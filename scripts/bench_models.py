"""Every registered network family on the same real scan: parameters, forward and train-step time,
peak training memory, at 2 cm and 5 cm.

    python scripts/bench_models.py --ply ../shared/data/real/scannet/scans/scene0000_00/scene0000_00_vh_clean_2.ply \
        [--device cuda] [--models all | NAME ...] [--json outputs/bench_models.json]

Models come from models.MODELS (aliases of one class are benched once). By default: Res16UNet14A and
Res16UNet34C, and one model per other family (a family is the Python module a class lives in);
`--models all` takes every distinct class. The input follows models.contract.input_type: "sparse" a
SparseTensor of the voxelized scan, "points" a PointBatch (each voxel's first point); a model needing
anything else, or failing to build with default arguments, is skipped with the reason.
Timing: median of --repeats after one warm-up, the input (and so its kernel maps) built inside each
pass as in training; forward = eval mode under no_grad; train step = forward, cross-entropy on fixed
random labels, backward, SGD step. CUDA times come from CUDA events, CPU times from perf_counter.
Peak = parameters and buffers + the train pass's peak above its start (lib.profiler.fit.measure_pass:
allocator counters on CUDA, the CPU allocator's events replayed on CPU), measured in a separate pass.
Ratios are against the first row of the same run.
"""
import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # lib, models live at the root
sys.path.insert(0, str(Path(__file__).resolve().parent))
from profile_memory import voxelize  # noqa: E402  (the same scan batches as the memory script)

DEFAULT = ["Res16UNet14A", "Res16UNet34C"]


def pick_models(requested: list) -> list:
    """Registered names to bench, one per class (the first name it was registered under)."""
    from models import MODELS

    first = {}
    for name, cls in MODELS.items():
        first.setdefault(cls, name)
    if requested == ["all"]:
        return list(first.values())
    if requested:
        return requested
    names = [n for n in DEFAULT if n in MODELS]
    families = {MODELS[n].__module__ for n in names}
    for cls, name in first.items():
        if cls.__module__ not in families:
            families.add(cls.__module__)
            names.append(name)
    return names


def input_builder(kind: str, engine: str, voxel_size: float):
    """make_input(batch, device) for a model input type, or None when this script cannot build it."""
    if kind == "sparse":
        from lib.sparse import SparseTensor

        return lambda b, d: SparseTensor(b["feats"].to(d), b["coords"].to(d), engine=engine)
    if kind == "points":
        from lib.structure import PointBatch

        def make(b, d):
            first = b["first"]
            coord = torch.cat([pts[first[o0:o1]] for pts, o0, o1 in
                               zip(b["points"], b["offsets"][:-1].tolist(), b["offsets"][1:].tolist())])
            return PointBatch(coord, b["coords"][:, 1:].int(), b["feats"], b["offsets"], voxel_size).to(d)
        return make
    return None


class Clock:
    """Wall time of a callable in ms: CUDA events on a CUDA device, perf_counter elsewhere."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"

    def __call__(self, fn) -> float:
        if self.cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            return start.elapsed_time(end)
        t0 = time.perf_counter()
        fn()
        return (time.perf_counter() - t0) * 1e3


def bench_one(name, batch, voxel_size, args, device) -> dict:
    from lib.profiler.fit import measure_pass
    from lib.profiler.report import static_bytes
    from models import build_model
    from models.contract import input_type, parse_output

    row = {"model": name, "voxel_size_m": voxel_size, "voxels": len(batch["coords"])}
    torch.manual_seed(0)
    try:
        model = build_model(SimpleNamespace(name=name, args={}), 3, args.classes).to(device)
        kind = input_type(model)
    except Exception as exc:  # a model that needs recipe arguments, or declares an unknown input
        return row | {"skipped": f"cannot build with default arguments: {type(exc).__name__}: {exc}"}
    make_input = input_builder(kind, args.engine, voxel_size)
    if make_input is None:
        return row | {"input": kind, "skipped": f"input type {kind!r} is not built by this script"}
    labels = torch.randint(0, args.classes, (len(batch["coords"]),), device=device)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

    def forward():
        model.eval()
        with torch.no_grad():
            model(make_input(batch, device))

    def step():
        model.train()
        out = parse_output(model(make_input(batch, device)))
        loss = torch.nn.functional.cross_entropy(out.logits.float(), labels)
        loss = loss + sum(v.float() for v in out.losses.values())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    clock = Clock(device)
    times = {}
    for key, fn in (("forward_ms", forward), ("train_step_ms", step)):
        fn()
        times[key] = statistics.median(clock(fn) for _ in range(args.repeats))
    peak = static_bytes(model) + measure_pass(model, batch, make_input, device)
    return row | {"input": kind, "parameters": sum(p.numel() for p in model.parameters()),
                  **{k: round(v, 2) for k, v in times.items()}, "peak_bytes": peak}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--ply", type=Path, required=True, help="a real scan (vertex x, y, z, red, green, blue)")
    p.add_argument("--models", nargs="*", default=[], help="registered names, or 'all' (default: see above)")
    p.add_argument("--voxel-sizes", nargs="+", type=float, default=[0.02, 0.05], help="metres")
    p.add_argument("--device", default="cpu")
    p.add_argument("--engine", default="torch", help="sparse engine of SparseTensor inputs")
    p.add_argument("--classes", type=int, default=20)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json", type=Path, default=None, help="write the rows here")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is visible")
    import models  # noqa: F401  (registers every model)

    rows = []
    for voxel_size in args.voxel_sizes:
        batch = voxelize(args.ply, voxel_size)
        for name in pick_models(args.models):
            print(f"{name} at {voxel_size:g} m ...", file=sys.stderr, flush=True)
            rows.append(bench_one(name, batch, voxel_size, args, device))
    ref = next((r for r in rows if "skipped" not in r), None)
    head = (f"{'model':<18} {'input':<7} {'voxel m':>7} {'voxels':>7} {'params M':>9} {'fwd ms':>9} "
            f"{'step ms':>9} {'peak MiB':>9} {'step x':>7} {'peak x':>7}")
    print(f"\n{device}, {args.ply.name}; ratios against the first row\n{head}\n" + "-" * len(head))
    for r in rows:
        if "skipped" in r:
            print(f"{r['model']:<18} skipped: {r['skipped']}")
            continue
        r["step_ratio"] = r["train_step_ms"] / ref["train_step_ms"]
        r["peak_ratio"] = r["peak_bytes"] / ref["peak_bytes"]
        print(f"{r['model']:<18} {r['input']:<7} {r['voxel_size_m']:>7g} {r['voxels']:>7d} "
              f"{r['parameters'] / 1e6:>9.2f} {r['forward_ms']:>9.1f} {r['train_step_ms']:>9.1f} "
              f"{r['peak_bytes'] / 2**20:>9.1f} {r['step_ratio']:>7.2f} {r['peak_ratio']:>7.2f}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"device": str(device), "ply": str(args.ply), "engine": args.engine,
                                         "repeats": args.repeats, "rows": rows}, indent=1))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
