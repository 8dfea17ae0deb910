"""Data-loading speed: load + augment + voxelize one 150k-point scene, beside a plain
np.unique-based voxelization measured in the same run.

python -m scripts.bench_data [--points 150000] [--repeats 30] [--json out.json]

The scene is a real ScanNet scan (../shared/data/real) repeated with 1 cm jitter up to --points
points, written to a temporary preprocessed folder and read through datasets.build_dataset, so
the timing includes the .npy load. Prints median wall-clock and CPU milliseconds per
configuration and their ratios to the np.unique reference.
"""
import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from datasets import build_dataset, scannet, store
from datasets.preprocessing import preprocess
from lib.config.schema_data import DataConfig

REAL_SCANNET = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real" / "scannet"


def make_scene(out: Path, num_points: int) -> Path:
    """A preprocessed folder holding one scene of `num_points` points built from a real scan."""
    raw = out / "raw_pre"
    preprocess("scannet", REAL_SCANNET, raw, workers=1, progress=False)
    scene_id = sorted(store.read_manifest(raw)["scenes"])[0]
    coord, color, label = (store.load_array(raw, scene_id, name, mmap=False) for name in ("coord", "color", "label"))
    rng = np.random.default_rng(0)
    take = np.arange(num_points) % len(coord)
    coord = coord[take] + rng.normal(0, 0.01, (num_points, 3)).astype(np.float32) * (np.arange(num_points) >= len(coord))[:, None]
    label = label[take]
    root = out / "bench"
    valid = label[label >= 0]
    record = {"split": "train", "points": num_points, "ignored": int(num_points - len(valid)),
              "class_counts": np.bincount(valid, minlength=len(scannet.CLASS_NAMES)).tolist()}
    store.write_scene(root, "bench_scene", {"coord": coord.astype(np.float32), "color": color[take],
                                            "label": label}, record)
    store.write_json_atomic(root / store.MANIFEST, {"dataset": "scannet", "num_classes": len(scannet.CLASS_NAMES),
                                                    "class_names": scannet.CLASS_NAMES,
                                                    "scenes": {"bench_scene": record}, "skipped": {}})
    return root


def unique_reference(root: Path, voxel_size: float) -> None:
    """The plain way: np.unique over integer rows (inverse map and first point per voxel), then
    that point's colour as the voxel feature."""
    coord = store.load_array(root, "bench_scene", "coord")
    color = store.load_array(root, "bench_scene", "color")
    grid = np.floor(np.asarray(coord) / voxel_size).astype(np.int64)
    _, first, _ = np.unique(grid, axis=0, return_index=True, return_inverse=True)
    np.asarray(color)[first].astype(np.float32)


def median_ms(fn, repeats: int) -> tuple[float, float]:
    """Median wall-clock and median process CPU milliseconds of fn(i) over `repeats` calls (after
    one warm-up). CPU time leaves out the time this process waits for a core on a shared machine."""
    fn(0)
    wall, cpu = [], []
    for i in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        fn(i + 1)
        wall.append((time.perf_counter() - start) * 1e3)
        cpu.append((time.process_time() - start_cpu) * 1e3)
    return statistics.median(wall), statistics.median(cpu)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--points", type=int, default=150_000)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--voxel-size", type=float, default=0.02)
    parser.add_argument("--json", default="", help="write the results here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        root = make_scene(Path(tmp), args.points)
        train = build_dataset(DataConfig(dataset="scannet", root=str(root), voxel_size=args.voxel_size), "train")
        cfg_elastic = DataConfig(dataset="scannet", root=str(root), voxel_size=args.voxel_size)
        cfg_elastic.augment.elastic_p = 1.0
        elastic = build_dataset(cfg_elastic, "train")
        evaluation = build_dataset(DataConfig(dataset="scannet", root=str(root), voxel_size=args.voxel_size,
                                              augment_splits=[]), "train")

        def rows_of(ds):
            return lambda i: (ds.set_epoch(i), ds[0])

        results = {"reference: load + np.unique voxelization":
                   median_ms(lambda i: unique_reference(root, args.voxel_size), args.repeats),
                   "train item: load + augment + voxelize (random)": median_ms(rows_of(train), args.repeats),
                   "train item + elastic distortion (2 passes)": median_ms(rows_of(elastic), args.repeats),
                   "eval item: load + voxelize (mean, majority label)": median_ms(rows_of(evaluation), args.repeats),
                   "get_view (rotate, flip, scale; mean)":
                   median_ms(lambda i: evaluation.get_view(0, 0.7, True, 1.1), args.repeats)}
    ref_wall, ref_cpu = next(iter(results.values()))
    load = os.getloadavg()[0]
    print(f"{args.points} points, voxel {args.voxel_size} m, median of {args.repeats}, load average {load:.1f} "
          f"on {os.cpu_count()} cores")
    print(f"{'configuration':52s} {'wall ms':>8s} {'cpu ms':>8s} {'wall/ref':>9s} {'cpu/ref':>8s}")
    for name, (wall, cpu) in results.items():
        print(f"{name:52s} {wall:8.2f} {cpu:8.2f} {wall / ref_wall:9.3f} {cpu / ref_cpu:8.3f}")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "points": args.points, "voxel_size": args.voxel_size, "repeats": args.repeats, "load_average": load,
            "results": [{"name": n, "median_wall_ms": w, "median_cpu_ms": c, "wall_ratio_to_reference": w / ref_wall,
                         "cpu_ratio_to_reference": c / ref_cpu} for n, (w, c) in results.items()],
        }, indent=1))


if __name__ == "__main__":
    main()
