"""Peak memory and time of one attention block of each kind next to a BasicBlock of equal width.

Input: real ScanNet scans (<real data>/scannet/scans/*/<scene>_vh_clean_2.ply) voxelised at
--voxel-size, one batch item per scan, scans added until about --voxels voxels; features random
[N, --channels]. --maps cached (default): every block, BasicBlock included, sees kernel maps,
neighbour tables and their pair lists built once before the measured passes (the warm-up pass builds
them on a shared SparseContext), as a block inside a network does, where every block of a stage reuses
the maps of the first; --maps per-pass: each pass starts from a fresh SparseContext and builds them
inside the measured region. Per block, the median over --repeats of:
  fwd_s / fwd_bwd_s                  seconds of forward (no autograd) / forward + backward
  fwd_peak_bytes / fwd_bwd_peak_bytes  peak bytes allocated above what was live when the pass began
Time: time.perf_counter (CUDA: CUDA events). Peak: lib.profiler.meter.peak_bytes, the meter every
benchmark uses (CPU: torch.profiler allocation events replayed; CUDA: max_memory_allocated).
Blocks: basic (BasicBlock), codedvtr (release settings: D=3 cubes, dilations 2,1,3, H=8, C'=2C;
codedvtr_dw the same with aggregate=depthwise), discrete (M=4 patterns, hard straight-through), vq, vtr (chunked) and vtr_naive ([N, K, C] gathers).
Prints a table with ratios to basic (and vtr to vtr_naive); --json PATH writes
{"results": [{"block", "fwd_s", "fwd_bwd_s", "fwd_peak_bytes", "fwd_bwd_peak_bytes"}], ...,
"mixing_kernel": "native" | "torch"} (the mixing op's CPU path: VOXSEG_MIXING_KERNEL).

  python scripts/bench_blocks.py [--voxels 100000] [--channels 64] [--repeats 3] [--device cpu|cuda]
                                 [--maps cached|per-pass] [--blocks basic,codedvtr,...] [--threads N]
                                 [--json out.json]
"""
import argparse
import json
import os
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lib.profiler.meter import median_seconds, peak_bytes  # noqa: E402
from lib.sparse import SparseTensor  # noqa: E402
from models.blocks import BasicBlock  # noqa: E402
from models.codedvtr import CodedVTRBlock, DiscreteAttentionBlock  # noqa: E402
from models.vq import VQAttentionBlock  # noqa: E402
from models.vtr import VTRBlock  # noqa: E402
from scripts.real_scans import real_scan_coords  # noqa: E402

BLOCKS = {
    "basic": lambda c: BasicBlock(c, c),
    "codedvtr": lambda c: CodedVTRBlock(c, c, heads=8, value_expansion=2, dilations=(2, 1, 3)),
    "codedvtr_dw": lambda c: CodedVTRBlock(c, c, heads=8, value_expansion=2, dilations=(2, 1, 3),
                                           aggregate="depthwise"),
    "discrete": lambda c: DiscreteAttentionBlock(c, c, heads=8),
    "vq": lambda c: VQAttentionBlock(c, c, heads=8),
    "vtr": lambda c: VTRBlock(c, c, heads=8),
    "vtr_naive": lambda c: VTRBlock(c, c, heads=8, gather="naive"),
}


def measure(block, coords, feats, device, train: bool, repeats: int, maps: str):
    """(median seconds, peak bytes) of forward (train=False, no grad) or forward + backward."""
    ctx = SparseTensor(feats, coords, engine="torch").ctx

    def run():
        x = SparseTensor(feats.detach().requires_grad_(train), coords,
                         ctx=ctx if maps == "cached" else None, engine="torch")
        if train:
            out = block(x)
            out.feats.square().mean().backward()
        else:
            with torch.no_grad():
                block(x)

    run()  # warm-up (allocator, lazy inits)
    seconds = median_seconds(run, device, repeats)
    block.zero_grad(set_to_none=True)
    peak = peak_bytes(run, device)
    block.zero_grad(set_to_none=True)
    return seconds, peak


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--voxels", type=int, default=100_000)
    parser.add_argument("--voxel-size", type=float, default=0.02)
    parser.add_argument("--channels", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--blocks", default=",".join(BLOCKS))
    parser.add_argument("--maps", default="cached", choices=["cached", "per-pass"],
                        help="kernel maps built once before the measured passes, or inside each")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = leave as is)")
    parser.add_argument("--data-root", default=os.environ.get("VOXSEG_REAL_DATA", str(ROOT.parent / "shared" / "data" / "real")))
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device available")
    if args.threads:
        torch.set_num_threads(args.threads)
    names = [b for b in args.blocks.split(",") if b]
    unknown = [b for b in names if b not in BLOCKS]
    if unknown:
        raise SystemExit(f"--blocks: unknown {unknown}; known: {', '.join(BLOCKS)}")
    device = torch.device(args.device)
    coords = real_scan_coords(Path(args.data_root), args.voxel_size, args.voxels).to(device)
    feats = torch.randn(len(coords), args.channels, generator=torch.Generator().manual_seed(0)).to(device)
    print(f"{len(coords)} voxels in {int(coords[:, 0].max()) + 1} real scans at {args.voxel_size} m, "
          f"C={args.channels}, device {device}, {torch.get_num_threads()} threads, kernel maps {args.maps}"
          + (" (built once before measuring, for every block alike)" if args.maps == "cached" else "")
          + f", mixing op on {mixing_path(device)}")
    results = []
    for name in names:
        torch.manual_seed(0)
        block = BLOCKS[name](args.channels).to(device).train()
        fwd_s, fwd_peak = measure(block, coords, feats, device, False, args.repeats, args.maps)
        fwd_bwd_s, fwd_bwd_peak = measure(block, coords, feats, device, True, args.repeats, args.maps)
        results.append({"block": name, "fwd_s": fwd_s, "fwd_bwd_s": fwd_bwd_s,
                        "fwd_peak_bytes": fwd_peak, "fwd_bwd_peak_bytes": fwd_bwd_peak})
        print(f"  measured {name}", flush=True)
    by = {r["block"]: r for r in results}
    ref = by.get("basic")
    print(f"{'block':<10} {'fwd_s':>8} {'fwd_bwd_s':>10} {'fwd_MiB':>9} {'fwd_bwd_MiB':>12}"
          + ("  time_x_basic  peak_x_basic" if ref else ""))
    for r in results:
        line = (f"{r['block']:<10} {r['fwd_s']:>8.3f} {r['fwd_bwd_s']:>10.3f} {r['fwd_peak_bytes'] / 2**20:>9.1f} "
                f"{r['fwd_bwd_peak_bytes'] / 2**20:>12.1f}")
        if ref:
            r["fwd_bwd_time_ratio_to_basic"] = r["fwd_bwd_s"] / ref["fwd_bwd_s"]
            r["fwd_bwd_peak_ratio_to_basic"] = r["fwd_bwd_peak_bytes"] / max(1, ref["fwd_bwd_peak_bytes"])
            line += f"  {r['fwd_bwd_time_ratio_to_basic']:>12.2f}  {r['fwd_bwd_peak_ratio_to_basic']:>12.2f}"
        print(line)
    if "vtr" in by and "vtr_naive" in by:
        v, n = by["vtr"], by["vtr_naive"]
        print(f"vtr / vtr_naive: fwd+bwd time {v['fwd_bwd_s'] / n['fwd_bwd_s']:.2f}x, "
              f"peak {v['fwd_bwd_peak_bytes'] / max(1, n['fwd_bwd_peak_bytes']):.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "voxels": len(coords), "channels": args.channels, "device": str(device),
            "threads": torch.get_num_threads(), "maps": args.maps, "load_avg": os.getloadavg()[0],
            "mixing_kernel": mixing_path(device), "results": results}, indent=2))


def mixing_path(device) -> str:
    """Which path the codebook blocks' mixing op took: 'native' (the C++ kernel) or 'torch'."""
    from lib.sparse import mixing_native
    return "native" if mixing_native.active(torch.device(device), torch.float32) else "torch"


if __name__ == "__main__":
    main()
