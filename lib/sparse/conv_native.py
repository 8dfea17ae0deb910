"""The torch engine's sparse convolution on the CPU through its C++ kernel (lib/sparse/native/conv.cpp).

The kernel fuses gather, GEMM and scatter: a register tile of pairs reads its input rows in place
and adds into its output rows while they are in cache, where the tensor-op path
(torch_engine._conv_chunked) copies the gathered rows, writes the products and scatters them back.
torch_engine._SparseConv calls `forward` / `backward` here for CPU tensors when `active()`.
VOXSEG_CONV_KERNEL chooses: `auto` (default: the kernel where it builds, else tensor ops after one
warning), `native` (the kernel, or an error saying why not), `torch` (tensor ops always).

Dtypes: float32 and float64; bfloat16 (CPU autocast) is read and written as bfloat16 but summed in
float32 (weights converted once, each output tile rounded once at its end, weight gradients returned
from float32), where the tensor-op path rounds after every offset.
Threads: output tiles (forward, input gradient) and input channels (weight gradient) are cut into
torch.get_num_threads() contiguous ranges run side by side on lib.sparse.threads' pool; each sum
runs in one fixed order, so results do not depend on the thread count.
"""
import ctypes
import ctypes.util
import sys

import torch

from . import native, threads

DTYPES = (torch.float32, torch.float64, torch.bfloat16)
_ABI = 3
# output rows per tile: a tile's rows at C = 64 (256 x 256 B = 64 KiB) and the offsets' weights
# stay in L2 while every offset adds into them. 128 to 2048 rows measured alike (within noise) on a
# real scan (2 pairs per voxel) and the surface cloud (9), C = 64, one thread.
TILE_ROWS = 256
_MR = 6  # rows of the kernel's register tile (kMR)


def mode() -> str:
    return native.mode("VOXSEG_CONV_KERNEL")


def active(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether convolutions of tensors on `device` in `dtype` run through the kernel."""
    return native.active("conv", _ABI, "VOXSEG_CONV_KERNEL", device, dtype, DTYPES)


_HUGE = 2 << 20          # a transparent huge page (x86-64, arm64 with 4 KiB pages)
_MADV_HUGEPAGE = 14      # linux/mman.h
_OWN_MAPPING = 32 << 20  # glibc's DEFAULT_MMAP_THRESHOLD_MAX on 64-bit
_libc = []               # [the C library's madvise or None], looked up once


def _madvise():
    if not _libc:
        fn = None
        if sys.platform.startswith("linux"):
            try:
                fn = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True).madvise
                fn.argtypes, fn.restype = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int], ctypes.c_int
            except (OSError, AttributeError):
                fn = None
        _libc.append(fn)
    return _libc[0]


def fresh(rows: int, cols: int, dtype: torch.dtype) -> torch.Tensor:
    """torch.empty(rows, cols, dtype): where it spans huge pages, advised as such before its first
    touch. Large tensors come straight from mmap and each 4 KiB page faults once when the kernel
    first writes it (about 15 ms of a 50 ms forward at 150k x 64 here); 2 MiB pages fault 512
    times less. Advice only: where the system refuses it (THP off), nothing changes. Only from
    32 MiB: glibc serves those from a mapping of their own (its largest mmap threshold), so the
    advice ends with the tensor and never marks heap ranges that later tensors reuse."""
    out = torch.empty(rows, cols, dtype=dtype)
    nbytes = out.numel() * out.element_size()
    madvise = _madvise() if nbytes >= _OWN_MAPPING else None
    if madvise is not None:
        start = -(-out.data_ptr() // _HUGE) * _HUGE
        end = (out.data_ptr() + nbytes) // _HUGE * _HUGE
        if end > start:
            madvise(start, end - start, _MADV_HUGEPAGE)
    return out


class _Plan(ctypes.Structure):
    # the C++ struct Plan in native/conv.cpp, field for field
    _fields_ = [("offsets", ctypes.c_int64), ("center", ctypes.c_int64), ("rows", ctypes.c_int64),
                ("tile_rows", ctypes.c_int64), ("tiles", ctypes.c_int64), ("in_", ctypes.c_void_p),
                ("out", ctypes.c_void_p), ("cuts", ctypes.c_void_p)]


class Plan:
    """A kernel map's pairs as the kernel reads them: per offset, input and output rows (int64,
    ascending in output row) and where each tile of TILE_ROWS output rows starts in them. Holds
    every array it points to. `pairs[k]`: offset k's pair count (the centre's: every row)."""

    def __init__(self, kmap, tile_rows: int = TILE_ROWS):
        n = kmap.n_out
        tiles = max(1, -(-n // tile_rows))
        bounds = torch.arange(tiles + 1, dtype=torch.int64).mul_(tile_rows).clamp_(max=n)
        ins, outs, cuts, self.pairs = [], [], [], []
        for k in range(kmap.volume):
            i, o = kmap.in_idx[k], kmap.out_idx[k]
            if k == kmap.center or i is None or i.numel() == 0:
                ins.append(None)
                outs.append(None)
                cuts.append(torch.zeros(tiles + 1, dtype=torch.int64))
                self.pairs.append(n if k == kmap.center else 0)
                continue
            if o.numel() > 1 and not bool((o[1:] >= o[:-1]).all()):
                order = torch.argsort(o, stable=True)
                i, o = i[order], o[order]
            i, o = i.to(torch.int64).contiguous(), o.to(torch.int64).contiguous()
            ins.append(i)
            outs.append(o)
            cuts.append(torch.searchsorted(o, bounds))
            self.pairs.append(i.numel())
        self.ins, self.outs = ins, outs
        self.cuts = torch.stack(cuts).contiguous()
        self.tiles = tiles
        self._in = (ctypes.c_void_p * len(ins))(*[0 if t is None else t.data_ptr() for t in ins])
        self._out = (ctypes.c_void_p * len(outs))(*[0 if t is None else t.data_ptr() for t in outs])
        center = -1 if kmap.center is None else kmap.center
        if center >= 0 and kmap.n_in != kmap.n_out:
            raise ValueError(f"conv kernel: a centre offset needs n_in == n_out, got {kmap.n_in} and {kmap.n_out}")
        self.struct = _Plan(kmap.volume, center, n, tile_rows, tiles, ctypes.cast(self._in, ctypes.c_void_p),
                            ctypes.cast(self._out, ctypes.c_void_p), self.cuts.data_ptr())


def plan(kmap) -> Plan:
    """The Plan of kmap, cached with it (a map and its transposed() share the cache and the index
    lists in swapped roles, so each direction is keyed by its lists)."""
    key = ("native_plan", id(kmap.in_idx), id(kmap.out_idx), TILE_ROWS)
    if key not in kmap._csr:
        kmap._csr[key] = Plan(kmap)
    return kmap._csr[key]


def _functions(dtype):
    lib = native.load("conv", _ABI)
    suffix = {torch.float32: "f32", torch.float64: "f64", torch.bfloat16: "bf16"}[dtype]
    fwd, gw = lib[f"voxseg_conv_forward_{suffix}"], lib[f"voxseg_conv_grad_weight_{suffix}"]
    i64, ptr, op = ctypes.c_int64, ctypes.c_void_p, ctypes.POINTER(_Plan)
    fwd.argtypes, fwd.restype = [op, i64, i64, ptr, ptr, ptr, i64, i64, ctypes.c_int], None
    gw.argtypes, gw.restype = [op, i64, i64, ptr, ptr, ptr, i64, i64], None
    return fwd, gw


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the kernel sums in (and takes weights and gives weight gradients in)."""
    return torch.float32 if dtype == torch.bfloat16 else dtype


def _split(fn, ranges):
    """fn(lo, hi) for each range, side by side on the sparse core's pool (ctypes releases the GIL)."""
    if len(ranges) == 1:
        fn(*ranges[0])
        return
    pool = threads.executor(len(ranges))
    for job in [pool.submit(fn, lo, hi) for lo, hi in ranges]:
        job.result()


def _run_forward(p: Plan, x, w, y, accumulate: bool):
    """y [rows, Cout] (=, or += with accumulate) the map's sum of x [*, Cin] @ w [K, Cin, Cout]; all
    contiguous, x and y in one dtype, w in its compute_dtype."""
    fwd, _ = _functions(x.dtype)
    op = ctypes.byref(p.struct)
    parts = min(torch.get_num_threads(), p.tiles)
    ranges = [(p.tiles * t // parts, p.tiles * (t + 1) // parts) for t in range(parts)]
    _split(lambda t0, t1: fwd(op, t0, t1, x.data_ptr(), w.data_ptr(), y.data_ptr(), x.shape[1], y.shape[1],
                              int(accumulate)), [r for r in ranges if r[1] > r[0]])


def forward(xs: torch.Tensor, weight: torch.Tensor, kmap) -> torch.Tensor:
    """out [n_out, Cout] in xs's dtype: out[o] = sum over kmap's pairs (k, i, o) of xs[i] @ weight[k]
    (the centre as identity pairs); xs [n_in, Cin] and out in the map's position order."""
    x, w = xs.contiguous(), weight.to(compute_dtype(xs.dtype)).contiguous()
    out = fresh(kmap.n_out, weight.shape[2], xs.dtype)
    _run_forward(plan(kmap), x, w, out, accumulate=False)
    return out


def backward(xs, grads, weights, kmaps, need_x: bool, need_ws):
    """(grad of xs or None, [grad of weights[d] or None]) of the convolutions out_d = forward(xs,
    weights[d], kmaps[d]) from their gradients `grads` (None where an output got none), all in
    position order and in the input's dtypes."""
    dtype = compute_dtype(xs.dtype)
    x = xs.contiguous()
    grad_x, grad_ws = None, [None] * len(weights)
    _, gw_fn = _functions(xs.dtype)
    for d, (g, weight, kmap) in enumerate(zip(grads, weights, kmaps)):
        if g is None:
            continue
        g = g.to(xs.dtype).contiguous()
        p = plan(kmap)
        if need_ws[d]:
            gw = torch.zeros(weight.shape, dtype=dtype)
            op = ctypes.byref(p.struct)
            cin, parts = x.shape[1], min(torch.get_num_threads(), -(-x.shape[1] // _MR))
            # input-channel ranges on register-tile bounds (multiples of 6 rows)
            bounds = [min(cin, -(-cin * t // parts) // _MR * _MR) if t < parts else cin for t in range(parts + 1)]
            _split(lambda c0, c1: gw_fn(op, c0, c1, x.data_ptr(), g.data_ptr(), gw.data_ptr(), cin, g.shape[1]),
                   [(lo, hi) for lo, hi in zip(bounds, bounds[1:]) if hi > lo])
            grad_ws[d] = gw.to(weight.dtype)
        if need_x:  # the transposed pairs with each offset's weight transposed
            wt = weight.to(dtype).transpose(1, 2).contiguous()
            first = grad_x is None
            if first:
                grad_x = fresh(kmap.n_in, x.shape[1], xs.dtype)
            _run_forward(plan(kmap.transposed()), g, wt, grad_x, accumulate=not first)
    if need_x and grad_x is None:
        grad_x = torch.zeros(kmaps[0].n_in, x.shape[1], dtype=xs.dtype)
    return grad_x, grad_ws
