"""Every registered network family on the same real scan: parameters, forward and train-step time,
peak training memory, at 2 cm and 5 cm.

    python scripts/bench_models.py --ply ../shared/data/real/scannet/scans/scene0000_00/scene0000_00_vh_clean_2.ply \
        [--device cuda] [--models all | NAME ... | --recipes] [--json outputs/bench_models.json]

--recipes: the model zoo instead. One row per recipe in config/ (a YAML file that loads as a config;
others, like a label map, are listed as skipped), its network at the recipe's own model.args, plus
`mink-m`, the Mink-M baseline: scannet_tr.yaml's CodedVTR body (widths, depths, stem) with every
stage a BasicBlock. Every network gets the same input (the scan's RGB, 3 channels) and --classes
outputs, so rows differ only in the network; each row carries `recipe` (the file stem) and its
ratios to the mink-m row of the same voxel size (params_x, fwd_x, step_x, peak_x). Recipes whose
network is the same (model name and args) are measured once; the others copy that row and name it
in `same_network_as`.

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
Ratios are against the first row of the same voxel size in the same run (--recipes: the mink-m row).
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
CONFIG = Path(__file__).resolve().parents[1] / "config"


def mink_m_args(config_dir: Path = CONFIG) -> dict:
    """Mink-M: scannet_tr.yaml's CodedVTR body with every stage a BasicBlock (no attention args)."""
    from lib.config import load_config

    cfg = load_config(config_dir / "scannet_tr.yaml")
    args = {k: v for k, v in dict(cfg.model.args).items() if k not in ("block_args", "stage_block_args")}
    return {"name": cfg.model.name, "args": args | {"stage_blocks": ["basic"] * 8}}


def recipe_specs(config_dir: Path = CONFIG) -> list:
    """[(recipe, {"name", "args"} or None, why not)] for mink-m and every YAML file of config_dir
    (files starting with '_' are bases, not recipes)."""
    from lib.config import ConfigError, load_config

    specs = [("mink-m", mink_m_args(config_dir), None)]
    for path in sorted(config_dir.glob("*.yaml")):
        if path.stem.startswith("_"):
            continue
        try:
            cfg = load_config(path)
        except ConfigError as exc:
            specs.append((path.stem, None, f"not a recipe: {exc}"))
            continue
        specs.append((path.stem, {"name": cfg.model.name, "args": dict(cfg.model.args)}, None))
    return specs


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


def bench_one(name, batch, voxel_size, args, device, model_args=None, recipe=None) -> dict:
    from lib.profiler.fit import measure_pass
    from lib.profiler.report import static_bytes
    from models import build_model
    from models.contract import input_type, parse_output

    row = {"model": name, "voxel_size_m": voxel_size, "voxels": len(batch["coords"])}
    if recipe is not None:
        row = {"recipe": recipe} | row
    torch.manual_seed(0)
    try:
        model = build_model(SimpleNamespace(name=name, args=dict(model_args or {})), 3, args.classes).to(device)
        kind = input_type(model)
    except Exception as exc:  # a model that needs recipe arguments, or declares an unknown input
        what = "its recipe's arguments" if recipe is not None else "default arguments"
        return row | {"skipped": f"cannot build with {what}: {type(exc).__name__}: {exc}"}
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
    p.add_argument("--recipes", action="store_true", help="the model zoo: every recipe in config/ and mink-m")
    p.add_argument("--only", nargs="*", default=[], help="with --recipes: just these recipe stems (mink-m always)")
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

    specs = (recipe_specs() if args.recipes else [(None, {"name": n, "args": {}}, None) for n in pick_models(args.models)])
    if args.recipes and args.only:
        specs = [s for s in specs if s[0] == "mink-m" or s[0] in args.only]
    rows = []
    for voxel_size in args.voxel_sizes:
        batch = voxelize(args.ply, voxel_size)
        measured = {}  # recipes with the same network (name and args) are measured once
        for recipe, spec, why in specs:
            if spec is None:
                rows.append({"recipe": recipe, "model": "-", "voxel_size_m": voxel_size, "skipped": why})
                continue
            key = json.dumps(spec, sort_keys=True, default=str)
            if key in measured:
                rows.append(dict(measured[key], recipe=recipe, same_network_as=measured[key]["recipe"]))
                continue
            print(f"{recipe or spec['name']} at {voxel_size:g} m ...", file=sys.stderr, flush=True)
            rows.append(bench_one(spec["name"], batch, voxel_size, args, device, spec["args"], recipe))
            measured[key] = rows[-1]
    label = "recipe" if args.recipes else "model"
    head = (f"{label:<18} {'input':<7} {'voxel m':>7} {'voxels':>7} {'params M':>9} {'fwd ms':>9} "
            f"{'step ms':>9} {'peak MiB':>9} {'params x':>8} {'fwd x':>7} {'step x':>7} {'peak x':>7}")
    against = "the mink-m row" if args.recipes else "the first row"
    print(f"\n{device}, {args.ply.name}, torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"ratios against {against} of the same voxel size\n{head}\n" + "-" * len(head))
    for r in rows:
        name = r.get("recipe") or r["model"]
        if "skipped" in r:
            print(f"{name:<18} skipped: {r['skipped']}")
            continue
        ref = next((q for q in rows if q["voxel_size_m"] == r["voxel_size_m"] and "skipped" not in q
                    and (not args.recipes or q.get("recipe") == "mink-m")), None)
        if ref is not None:
            r["params_ratio"] = r["parameters"] / ref["parameters"]
            r["forward_ratio"] = r["forward_ms"] / ref["forward_ms"]
            r["step_ratio"] = r["train_step_ms"] / ref["train_step_ms"]
            r["peak_ratio"] = r["peak_bytes"] / ref["peak_bytes"]
        ratios = "".join(f" {r[k]:>{w}.2f}" if k in r else f" {'-':>{w}}"
                         for k, w in (("params_ratio", 8), ("forward_ratio", 7), ("step_ratio", 7), ("peak_ratio", 7)))
        same = f"  (= {r['same_network_as']})" if r.get("same_network_as") else ""
        print(f"{name:<18} {r['input']:<7} {r['voxel_size_m']:>7g} {r['voxels']:>7d} "
              f"{r['parameters'] / 1e6:>9.2f} {r['forward_ms']:>9.1f} {r['train_step_ms']:>9.1f} "
              f"{r['peak_bytes'] / 2**20:>9.1f}{ratios}{same}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        import os
        import platform
        args.json.write_text(json.dumps({"device": str(device), "ply": str(args.ply), "engine": args.engine,
                                         "repeats": args.repeats, "torch": torch.__version__,
                                         "threads": torch.get_num_threads(), "machine": platform.machine(),
                                         "load_average": os.getloadavg(),
                                         "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                                         "recipes": args.recipes, "rows": rows}, indent=1))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
