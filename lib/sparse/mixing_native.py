"""The mixing op (lib.sparse.mixing) on the CPU through its C++ kernel (lib/sparse/native/mixing.cpp).

The kernel reads every pair once forward and once backward, where the tensor-op path makes several
passes per pair; lib.sparse.mixing calls `forward` / `backward` here for CPU tensors when `active()`.
VOXSEG_MIXING_KERNEL chooses: `auto` (default: the kernel where it builds, else tensor ops after one
warning), `native` (the kernel, or an error saying why not), `torch` (tensor ops always).

Threads: a call's heads are cut into torch.get_num_threads() contiguous ranges run side by side
(ctypes releases the GIL); ranges write disjoint channels and heads, so sums do not depend on the
thread count.
"""
import ctypes

import torch
from . import native, norm_relu
from .kernel_map import table_derived

_ABI = 3


def mode() -> str:
    return native.mode("VOXSEG_MIXING_KERNEL")


def active(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether the op runs through the kernel for tensors on `device` computed in `dtype`."""
    return native.active("mixing", _ABI, "VOXSEG_MIXING_KERNEL", device, dtype, (torch.float32, torch.float64))


def row_pairs(table: torch.Tensor):
    """(begin int64 [N + 1], offset int32 [P], source int32 [P]): the occupied pairs of a neighbour
    table [N, K] (-1 empty) row by row, row i's at begin[i]:begin[i + 1]; cached with the table."""
    return table_derived(table, "row_pairs", _build_row_pairs)


def _build_row_pairs(table):
    if table.shape[0] >= 2 ** 31:
        raise ValueError(f"mixing kernel: {table.shape[0]} rows do not fit its int32 pair lists")
    valid = table.ge(0)
    row, k = valid.nonzero(as_tuple=True)  # row-major
    begin = torch.zeros(table.shape[0] + 1, dtype=torch.int64)
    torch.cumsum(valid.sum(1), 0, out=begin[1:])
    return begin, k.int(), table[row, k].int()


class _Op(ctypes.Structure):
    # the C++ struct Op in native/mixing.cpp, field for field
    _fields_ = [("channels", ctypes.c_int64), ("heads", ctypes.c_int64), ("v", ctypes.c_void_p),
                ("scale", ctypes.c_void_p), ("shift", ctypes.c_void_p), ("a", ctypes.c_void_p),
                ("a_stride", ctypes.c_int64), ("groups", ctypes.c_int64), ("begin", ctypes.c_void_p),
                ("offset", ctypes.c_void_p), ("source", ctypes.c_void_p), ("group_begin", ctypes.c_void_p),
                ("elems", ctypes.c_void_p), ("weights", ctypes.c_void_p)]


def _functions(lib, dtype):
    """(forward, backward) of the library for `dtype`, with their C signatures declared."""
    suffix = "f32" if dtype == torch.float32 else "f64"
    fwd, bwd = (getattr(lib, f"voxseg_mixing_{kind}_{suffix}") for kind in ("forward", "backward"))
    i64, ptr, op = ctypes.c_int64, ctypes.c_void_p, ctypes.POINTER(_Op)
    fwd.argtypes, fwd.restype = [op, i64, i64, i64, i64, ptr], None
    bwd.argtypes, bwd.restype = [op, i64, i64, i64, i64, ptr, ptr, ptr, ptr, i64, ptr], None
    return fwd, bwd


def _ptr(t):
    return None if t is None else t.data_ptr()


def _array(ctype, values):
    return (ctype * max(1, len(values)))(*values)


class Call:
    """The kernel's view of one op: v [M, C] (None: backward reads no source), scale_shift ([C], [C])
    of a folded norm or None, a [N or 1, D, H], weights D x [K_d, C], tables D x int64 [N, K_d]; all
    float arrays in `dtype`. Holds every array it points to for as long as it lives."""

    def __init__(self, v, scale_shift, a, weights, tables, heads, channels, dtype):
        lib = native.load("mixing", _ABI)
        self._forward, self._backward = _functions(lib, dtype)
        prep = (lambda t: None if t is None else t.to(dtype).contiguous())
        self.v = prep(v)
        self.scale, self.shift = (None, None) if scale_shift is None else map(prep, scale_shift)
        self.a = prep(a)
        self.weights = [prep(w) for w in weights]
        self.heads, self.channels, self.dtype = heads, channels, dtype
        by_table = {}  # elements on one table object share its reads
        for d, table in enumerate(tables):
            by_table.setdefault(id(table), (row_pairs(table), []))[1].append(d)
        self.pairs = [p for p, _ in by_table.values()]
        elems = [d for _, ds in by_table.values() for d in ds]
        group_begin = [0]
        for _, ds in by_table.values():
            group_begin.append(group_begin[-1] + len(ds))
        arrays = [_array(ctypes.c_void_p, [p[part].data_ptr() for p in self.pairs]) for part in range(3)]
        arrays += [_array(ctypes.c_int64, group_begin), _array(ctypes.c_int64, elems),
                   _array(ctypes.c_void_p, [w.data_ptr() for w in self.weights])]
        self._arrays = arrays
        self.op = _Op(channels, heads, _ptr(self.v), _ptr(self.scale), _ptr(self.shift), self.a.data_ptr(),
                      0 if self.a.shape[0] == 1 else self.a.shape[1] * self.a.shape[2], len(self.pairs),
                      *(ctypes.cast(arr, ctypes.c_void_p) for arr in arrays))

    def _run(self, fn, r0, r1, *args):
        op = ctypes.byref(self.op)
        native.run_split(lambda h0, h1: fn(op, r0, r1, h0, h1, *args), self.heads, torch.get_num_threads())

    def forward(self, r0: int, r1: int, out: torch.Tensor):
        """out [r1 - r0, C] (contiguous, `dtype`) = rows r0:r1 of y."""
        self._run(self._forward, r0, r1, out.data_ptr())

    def backward(self, r0, r1, gy, y, grad_x, grad_a, grad_w):
        """From gy [r1 - r0, C], the gradient of y's rows: y's rows recomputed into y [r1 - r0, C],
        and added into grad_x [M, C] (of the source x), grad_a (like a) and grad_w[d] (like w_d);
        any of them None when not wanted. All contiguous, in `dtype`."""
        stride = 0 if grad_a is None or grad_a.shape[0] == 1 else grad_a.shape[1] * grad_a.shape[2]
        gw = _array(ctypes.c_void_p, [_ptr(g) for g in grad_w])
        self._run(self._backward, r0, r1, gy.data_ptr(), _ptr(y), _ptr(grad_x), _ptr(grad_a), stride,
                  ctypes.cast(gw, ctypes.c_void_p))


def forward(v, a, weights, tables, w_out, norm, dtype, heads, tile):
    """lib.sparse.mixing's forward on the kernel: (out [N, P or C] in dtype, the norm's (mean,
    invstd) or None). a, w_out in dtype; norm a NormReLU or None; tile: rows per projected tile."""
    n, c = tables[0].shape[0], v.shape[1]
    stats = None if norm is None else norm_relu.statistics(v, norm, dtype, tile)
    scale_shift = None if norm is None else norm_relu.affine(norm.weight, norm.bias, *stats)
    call = Call(v, scale_shift, a, weights, tables, heads, c, dtype)
    if w_out is None:
        out = torch.empty(n, c, dtype=dtype)
        call.forward(0, n, out)
        return out, stats
    # projected tile by tile: y is never whole
    out = torch.empty(n, w_out.shape[0], dtype=dtype)
    acc = torch.empty(min(tile, n), c, dtype=dtype)
    for r0 in range(0, n, tile):
        r1 = min(n, r0 + tile)
        call.forward(r0, r1, acc[:r1 - r0])
        torch.mm(acc[:r1 - r0], w_out.t(), out=out[r0:r1])
    return out, stats


def backward(grad_out, v, v_shape, a, weights, tables, w_out, norm, stats, needs, dtype, heads, tile):
    """lib.sparse.mixing's backward on the kernel: (grad of the source x or, with a norm, of v;
    grad_a; grad_w list; grad_w_out; the norm's weight and bias grads), each None where `needs`
    (need_v, need_a, need_out, need_w list) does not ask for it; all in dtype. v may be None when
    only the source's gradient is wanted."""
    need_v, need_a, need_out, need_w = needs
    n, c = tables[0].shape[0], v_shape[1]
    use_x = need_a or need_out or any(need_w)
    scale_shift = None if norm is None else norm_relu.affine(norm.weight, norm.bias, *stats)
    call = Call(v if use_x else None, scale_shift if use_x else None, a, weights, tables, heads, c, dtype)
    grad_out = grad_out.to(dtype).contiguous()
    grad_x = torch.zeros(v_shape, dtype=dtype) if need_v else None
    grad_a = torch.zeros(a.shape, dtype=dtype) if need_a else None
    grad_w = [torch.zeros(w.shape, dtype=dtype) if need else None for w, need in zip(weights, need_w)]
    grad_w_out = torch.zeros(w_out.shape, dtype=dtype) if need_out else None
    rows = min(tile, n)
    gy_buf, y_buf = torch.empty(rows, c, dtype=dtype), (torch.empty(rows, c, dtype=dtype) if need_out else None)
    for r0 in range(0, n, tile):
        r1 = min(n, r0 + tile)
        gy = grad_out[r0:r1] if w_out is None else torch.mm(grad_out[r0:r1], w_out, out=gy_buf[:r1 - r0])
        y = None if y_buf is None else y_buf[:r1 - r0]
        call.backward(r0, r1, gy, y, grad_x, grad_a, grad_w)
        if need_out:
            grad_w_out.addmm_(grad_out[r0:r1].t(), y)
    grad_nw = grad_nb = None
    if norm is not None and grad_x is not None:  # the activation's gradient -> the BN input's
        grad_x, grad_nw, grad_nb = norm_relu.backward_(grad_x, v, norm, *stats, tile, gy_buf)
    return grad_x, grad_a, grad_w, grad_w_out, grad_nw, grad_nb
