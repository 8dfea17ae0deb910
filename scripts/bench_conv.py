"""The torch engine's CPU submanifold convolution (3x3x3) against this machine's floors, measured in one run.

Inputs: `real`, successive real ScanNet scans voxelised at --voxel-size until --voxels (scripts/real_scans.py;
about 2 pairs per voxel at 2 cm), and `surface`, bench_sparse's synthetic room (about 9 pairs per voxel).
For each input, width C (Cin = Cout), dtype (float32; bfloat16 under CPU autocast) and thread count,
the median wall time over --repeats (runs interleaved, so load bursts hit every case alike) of:
  fwd_s, fwd_bwd_s   the convolution (map cached), forward without autograd / forward + backward
                     (feature and weight gradients), by path: `kernel` (lib/sparse/native/conv.cpp)
                     and `tensor` (VOXSEG_CONV_KERNEL=torch: the tensor-op path it replaces)
and the floors of the same run, at the same thread count:
  gemm_s    torch.mm of the same FLOPs (2 * pairs * C * C, the centre's pairs included), the best of:
            one [pairs, C] @ [C, C] product allocating its output (as torch.mm is called), the same
            into a preallocated output, [4096, C] @ [C, C] products in cache (MKL's best rate at this
            width) and [512, 512] @ [512, 512] products (its best rate at any width); fwd+bwd is three
            such products' worth (3x)
  copy_s    dst.copy_(src) moving the op's minimal bytes (inputs read once, outputs written once,
            pair lists, weights): the memory floor, the one that binds at small C
  alloc_s   torch.empty(N, C).zero_(): the first touch of a fresh output, which every op returning one
            pays (large tensors come straight from mmap, so each of its pages faults once; fwd+bwd
            has two such outputs, y and the input gradient); `/g+a` is time / (gemm_s + alloc_s)
Ratios: time / floor. Prints a table; --json PATH writes every figure with the load average and machine.
THP_MEM_ALLOC_ENABLE=1 in the environment (PyTorch's CPU allocator then asks for transparent huge
pages) makes first touches several times cheaper where the kernel allows it; it is recorded.

  python scripts/bench_conv.py [--voxels 140000] [--channels 32 64] [--threads 1 2] [--json out.json]
"""
import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lib.sparse import SparseTensor, conv_native  # noqa: E402
from lib.sparse import nn as snn  # noqa: E402
from scripts.bench_sparse import surface_cloud  # noqa: E402
from scripts.real_scans import real_scan_coords  # noqa: E402

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
BLOCK = 4096  # rows of the in-cache GEMM floor
SQUARE = 512  # side of the square GEMM floor


def pair_count(kmap) -> int:
    return kmap.n_out + sum(i.numel() for k, i in enumerate(kmap.in_idx) if k != kmap.center)


def op_bytes(n: int, pairs: int, c: int, volume: int, size: int) -> dict:
    """Minimal bytes moved: forward reads x and writes y once, reads the non-centre pair lists
    (int64 input and output rows) and the weights; backward reads x and g, writes the input
    gradient, reads the pair lists twice (input and weight gradients) and writes the weight gradient."""
    lists = (pairs - n) * 16
    weights = volume * c * c * size
    fwd = 2 * n * c * size + lists + weights
    bwd = 3 * n * c * size + 2 * lists + 2 * weights
    return {"fwd": fwd, "fwd_bwd": fwd + bwd}


def conv_cases(coords, c, dtype, path):
    """{"fwd": f, "fwd_bwd": f} timing closures of one convolution (map built once, outside)."""
    torch.manual_seed(0)
    layer = snn.SubMConv3d(c, c, 3)
    feats = torch.randn(len(coords), c)
    x = SparseTensor(feats, coords, engine="torch")
    leaf = feats.clone().requires_grad_()
    xg = SparseTensor(leaf, coords, engine="torch")
    xg.ctx = x.ctx  # one map for both
    up = torch.randn(len(coords), c, dtype=dtype)
    amp = dtype != torch.float32

    def run(fn):
        def timed():
            before = os.environ.get("VOXSEG_CONV_KERNEL")
            os.environ["VOXSEG_CONV_KERNEL"] = "native" if path == "kernel" else "torch"
            try:
                with torch.autocast("cpu", dtype=dtype, enabled=amp):
                    fn()
            finally:
                if before is None:
                    os.environ.pop("VOXSEG_CONV_KERNEL")
                else:
                    os.environ["VOXSEG_CONV_KERNEL"] = before
        return timed

    def fwd():
        with torch.no_grad():
            layer(x)

    def fwd_bwd():
        out = layer(xg).feats
        out.backward(up)
        leaf.grad = layer.weight.grad = None

    return {"fwd": run(fwd), "fwd_bwd": run(fwd_bwd)}, x.ctx.kernel_map(1, 3, 1)


def floor_cases(pairs, n, c, nbytes):
    """Timing closures of the floors: three GEMM forms of the same FLOPs, one copy of the bytes, one
    fresh [n, c] output touched."""
    a, b = torch.randn(pairs, c), torch.randn(c, c)
    out = torch.empty(pairs, c)
    blocks = max(1, round(pairs / BLOCK))
    a_block, out_block = torch.randn(BLOCK, c), torch.empty(BLOCK, c)
    half = max(1, nbytes // 8)  # float32 elements: half the bytes read, half written
    src, dst = torch.randn(half), torch.empty(half)

    def blocked():
        for _ in range(blocks):
            torch.mm(a_block, b, out=out_block)

    sq = torch.randn(SQUARE, SQUARE)
    sq_out = torch.empty(SQUARE, SQUARE)
    squares = max(1, round(2 * pairs * c * c / (2 * SQUARE ** 3)))

    def square():
        for _ in range(squares):
            torch.mm(sq, sq, out=sq_out)

    return {"mm_alloc": lambda: torch.mm(a, b), "mm_out": lambda: torch.mm(a, b, out=out),
            "mm_cache": blocked, "copy": lambda: dst.copy_(src),
            "mm_square": square, "alloc": lambda: torch.empty(n, c).zero_()}, \
        {"mm_cache": blocks * BLOCK / pairs, "mm_square": squares * SQUARE ** 3 / (pairs * c * c)}


def median_times(cases: dict, repeats: int) -> dict:
    """{key: median seconds}, every case once per round, one untimed round first."""
    times = {k: [] for k in cases}
    for rep in range(repeats + 1):
        for k, fn in cases.items():
            t0 = time.perf_counter()
            fn()
            if rep:
                times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, default=Path(os.environ.get("VOXSEG_REAL_DATA", ROOT.parent / "shared" / "data" / "real")))
    p.add_argument("--inputs", nargs="+", default=["real", "surface"], choices=("real", "surface"))
    p.add_argument("--voxels", type=int, default=140_000, help="target voxels (real: whole scans until reached)")
    p.add_argument("--voxel-size", type=float, default=0.02, help="metres (real input)")
    p.add_argument("--channels", type=int, nargs="+", default=[32, 64])
    p.add_argument("--dtypes", nargs="+", default=["fp32", "bf16"], choices=tuple(DTYPES))
    p.add_argument("--paths", nargs="+", default=["kernel", "tensor"], choices=("kernel", "tensor"))
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)

    if "kernel" in args.paths and not conv_native.active(torch.device("cpu"), torch.float32):
        raise SystemExit(f"the conv kernel does not run here: {conv_native.native.reason('conv') or 'VOXSEG_CONV_KERNEL'}")
    load_before = os.getloadavg()
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"load average {load_before[0]:.1f} / {load_before[1]:.1f} / {load_before[2]:.1f}, median of {args.repeats}, "
          f"THP_MEM_ALLOC_ENABLE={os.environ.get('THP_MEM_ALLOC_ENABLE', 'unset')}")
    rows = []
    for name in args.inputs:
        coords = (real_scan_coords(args.data, args.voxel_size, args.voxels) if name == "real"
                  else surface_cloud(args.voxels))
        for c in args.channels:
            for threads in args.threads:
                torch.set_num_threads(threads)
                cases, meta = {}, {}
                for dname in args.dtypes:
                    for path in args.paths:
                        conv, kmap = conv_cases(coords, c, DTYPES[dname], path)
                        for kind, fn in conv.items():
                            cases[(dname, path, kind)] = fn
                pairs = pair_count(kmap)
                nbytes = op_bytes(len(coords), pairs, c, kmap.volume, 4)
                floors, blocked_share = floor_cases(pairs, len(coords), c, nbytes["fwd"])
                cases.update({("floor", f, ""): fn for f, fn in floors.items()})
                t = median_times(cases, args.repeats)
                gemm = min(t[("floor", f, "")] / blocked_share.get(f, 1.0)
                           for f in ("mm_alloc", "mm_out", "mm_cache", "mm_square"))
                copy_fwd = t[("floor", "copy", "")]
                copy = {"fwd": copy_fwd, "fwd_bwd": copy_fwd * nbytes["fwd_bwd"] / nbytes["fwd"]}
                alloc = t[("floor", "alloc", "")]
                with_alloc = {"fwd": gemm + alloc, "fwd_bwd": 3 * gemm + 2 * alloc}
                base = {"input": name, "voxels": len(coords), "pairs": pairs, "channels": c, "threads": threads,
                        "gemm_floor_fwd_s": gemm, "gemm_floor_fwd_bwd_s": 3 * gemm,
                        "copy_floor_fwd_s": copy["fwd"], "copy_floor_fwd_bwd_s": copy["fwd_bwd"],
                        "alloc_s": alloc,
                        "bytes_fwd": nbytes["fwd"], "bytes_fwd_bwd": nbytes["fwd_bwd"],
                        "gflop_fwd": 2 * pairs * c * c / 1e9,
                        "floors_s": {f: t[("floor", f, "")] for f in floors}, "floor_shares": blocked_share}
                for dname in args.dtypes:
                    for path in args.paths:
                        row = dict(base, dtype=dname, path=path)
                        for kind in ("fwd", "fwd_bwd"):
                            s = t[(dname, path, kind)]
                            floor = 3 * gemm if kind == "fwd_bwd" else gemm
                            row.update({f"{kind}_s": s, f"{kind}_over_gemm": s / floor,
                                        f"{kind}_over_gemm_alloc": s / with_alloc[kind],
                                        f"{kind}_over_copy": s / copy[kind],
                                        f"{kind}_gb_s": nbytes[kind] / s / 1e9,
                                        f"{kind}_gflop_s": (3 if kind == "fwd_bwd" else 1) * base["gflop_fwd"] / s})
                        rows.append(row)
                        print_row(row)
    load_after = os.getloadavg()
    print(f"load average after: {load_after[0]:.1f}")
    if args.json:
        args.json.write_text(json.dumps({"torch": torch.__version__, "machine": platform.processor() or platform.machine(),
                                         "cores": os.cpu_count(), "load_before": load_before, "load_after": load_after,
                                         "repeats": args.repeats, "voxel_size_m": args.voxel_size,
                                         "thp_mem_alloc_enable": os.environ.get("THP_MEM_ALLOC_ENABLE"),
                                         "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "rows": rows},
                                        indent=2))
        print(f"wrote {args.json}")


_HEADER = False


def print_row(r):
    global _HEADER
    if not _HEADER:
        print(f"{'input':<8}{'voxels':>7}{'pairs/v':>8}{'C':>4}{'thr':>4} {'dtype':<5}{'path':<7}"
              f"{'fwd ms':>8}{'/gemm':>6}{'/g+a':>6}{'/copy':>6}{'GB/s':>6}{'fwd+bwd ms':>11}{'/gemm':>6}{'/g+a':>6}"
              f"{'/copy':>6}{'GB/s':>6}{'gemm ms':>8}{'alloc ms':>9}{'copy ms':>8}")
        _HEADER = True
    print(f"{r['input']:<8}{r['voxels']:>7}{r['pairs'] / r['voxels']:>8.2f}{r['channels']:>4}{r['threads']:>4} "
          f"{r['dtype']:<5}{r['path']:<7}{r['fwd_s'] * 1e3:>8.1f}{r['fwd_over_gemm']:>6.2f}"
          f"{r['fwd_over_gemm_alloc']:>6.2f}{r['fwd_over_copy']:>6.2f}{r['fwd_gb_s']:>6.1f}{r['fwd_bwd_s'] * 1e3:>11.1f}"
          f"{r['fwd_bwd_over_gemm']:>6.2f}{r['fwd_bwd_over_gemm_alloc']:>6.2f}{r['fwd_bwd_over_copy']:>6.2f}"
          f"{r['fwd_bwd_gb_s']:>6.1f}{r['gemm_floor_fwd_s'] * 1e3:>8.1f}{r['alloc_s'] * 1e3:>9.1f}"
          f"{r['copy_floor_fwd_s'] * 1e3:>8.1f}", flush=True)


if __name__ == "__main__":
    main()
