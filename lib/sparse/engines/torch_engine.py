"""The pure-PyTorch engine: gather -> GEMM -> scatter-add over the kernel map's pairs (CPU and CUDA).

On CPU (float32/64) the pairs go in chunks of consecutive output rows (KernelMap.chunks): one gather,
one GEMM per offset and one sparse CSR product per chunk, all on cache-sized buffers, split between
torch.get_num_threads() Python threads. Elsewhere (CUDA, half precision) they go offset by offset
with index_add_. No [N, K, C] tensor is ever built: the working buffers hold one chunk (or one
offset) of pairs. The autograd Functions save the inputs and the map, not the gathered copies, and
the backward pass runs the same pairs transposed.

Autocast: under torch.autocast the convolutions run in the autocast dtype (features and weight cast
to it, like F.conv3d) and return that dtype; the Functions themselves run with autocast off.

The environment variable VOXSEG_TORCH_CONV_PATH picks the pair loop: `auto` (default, as above) or
`per_offset`, which forces the CUDA path (per-offset index_add_) on every device, so that path is
tested on CPU (tests/sparse/test_cuda_branch.py). It is read at each call.
"""

import os
from concurrent.futures import ThreadPoolExecutor

import torch

from ..kernel_map import KernelMap
from . import EngineSpec, register_engine


# pairs per chunk of the CPU path: at C=32 the working buffers (2 MiB each) stay in cache; one size
# for every width keeps one chunk plan per map, and the per-offset GEMMs of wide layers (C=256:
# about 600 rows each) efficient. Measured on the bench cloud and on Res16UNet34C train steps.
PAIRS_PER_CHUNK = 16384


PATHS = ("auto", "per_offset")


def _scatter_add(dst: torch.Tensor, idx: torch.Tensor, src: torch.Tensor, kmap: KernelMap) -> None:
    """dst[idx[p]] += src[p] for every p (idx may repeat)."""
    if _cpu_float(dst):
        dst.addmm_(kmap.scatter_matrix(idx, dst.shape[0], dst.dtype), src)
    else:
        dst.index_add_(0, idx, src)  # CUDA: atomics, already fast


def _accumulator(dtype: torch.dtype) -> torch.dtype:
    """The dtype sums over the K offsets run in: float32 for half types (bf16 keeps 8 bits, and K
    sequential rounded adds drift by percents), else the input's."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def _cpu_float(t: torch.Tensor) -> bool:
    """True where the paths built on sparse CSR products run: CPU float32/64 (MKL has those), unless
    VOXSEG_TORCH_CONV_PATH=per_offset forces the CUDA path."""
    path = os.environ.get("VOXSEG_TORCH_CONV_PATH", "auto")
    if path not in PATHS:
        raise ValueError(f"VOXSEG_TORCH_CONV_PATH must be one of {', '.join(PATHS)}, got {path!r}")
    return path == "auto" and t.device.type == "cpu" and t.dtype in (torch.float32, torch.float64)


def _autocast_dtype(t: torch.Tensor):
    """The dtype autocast gives a GEMM on t's device now, or None when autocast is off there."""
    device = t.device.type
    if torch.amp.is_autocast_available(device) and torch.is_autocast_enabled(device):
        return torch.get_autocast_dtype(device)
    return None


def _apply(function, feats: torch.Tensor, weight: torch.Tensor, kmap: KernelMap) -> torch.Tensor:
    """function.apply with autocast resolved here: both operands in the autocast dtype, autocast off
    inside (its per-op casts would meet fp32 buffers in addmm_ / index_add_)."""
    dtype = _autocast_dtype(feats)
    if dtype is None:
        return function.apply(feats, weight, kmap)
    with torch.autocast(feats.device.type, enabled=False):
        return function.apply(feats.to(dtype), weight.to(dtype), kmap)


def _add_xt_g(dst: torch.Tensor, x: torch.Tensor, g: torch.Tensor) -> None:
    """dst += x^T @ g (a weight gradient). When g is narrower than x, (g^T @ x)^T: MKL on one thread
    was ~10x slower on x^T @ g for x [99k, 64], g [99k, 8] (a CodedVTR choice conv), equal otherwise."""
    if g.shape[1] < x.shape[1]:
        dst += torch.mm(g.t(), x).t()
    else:
        dst.addmm_(x.t(), g)


def _autocast_off(backward):
    """Run a backward with autocast off on the gradient's device (it may be called inside an
    autocast region; the forward ran with it off, on operands of one dtype)."""
    def run(ctx, grad_out):
        device = grad_out.device.type
        if not torch.amp.is_autocast_available(device):
            return backward(ctx, grad_out)
        with torch.autocast(device, enabled=False):
            return backward(ctx, grad_out)
    return run


def _chunks(kmap: KernelMap, weight: torch.Tensor) -> list:
    return kmap.chunks(PAIRS_PER_CHUNK, weight.dtype)


_pool = {"pid": None, "size": 0, "executor": None}


def _run_split(fn, chunks: list) -> list:
    """[fn(part) for each part of the chunks], the parts run by torch.get_num_threads() Python
    threads while torch's own ops run single-threaded. Parallel ops would each wait for their
    partner threads, which on a loaded machine costs a scheduler time slice per op (measured
    10-30x slower with 2 threads at load 2 on 2 cores); here the threads meet once per call."""
    n = min(torch.get_num_threads(), len(chunks))
    if n <= 1:
        return [fn(chunks)]
    if _pool["pid"] != os.getpid() or _pool["size"] != n:  # a forked child has no pool threads
        if _pool["pid"] == os.getpid():
            _pool["executor"].shutdown(wait=False)
        _pool.update(pid=os.getpid(), size=n, executor=ThreadPoolExecutor(n, thread_name_prefix="sparse-conv"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        futures = [_pool["executor"].submit(_without_grad, fn, chunks[i::n]) for i in range(n)]
        return [f.result() for f in futures]
    finally:
        torch.set_num_threads(threads)


def _without_grad(fn, part):
    # grad mode is per thread: the pool threads do not inherit the autograd Function's no_grad
    with torch.no_grad():
        return fn(part)


def _positions(rows_tensor: torch.Tensor, order) -> torch.Tensor:
    """Rows -> sorted-key positions (the map's index space); identity when rows are sorted."""
    return rows_tensor.contiguous() if order is None else rows_tensor.index_select(0, order)


def _max_pairs(kmap: KernelMap) -> int:
    return max((i.numel() for k, i in enumerate(kmap.in_idx) if k != kmap.center), default=0)


def _conv_chunked(out: torch.Tensor, xs: torch.Tensor, weight: torch.Tensor, kmap: KernelMap) -> None:
    """out += the non-centre pairs, chunk by chunk: gather, one GEMM per offset, one CSR product."""
    def run(chunks):
        # chunks own disjoint output rows, so the threads never write the same row
        m_max = max((c.in_idx.numel() for c in chunks), default=0)
        gathered = xs.new_empty(m_max, weight.shape[1])
        product = xs.new_empty(m_max, weight.shape[2])
        for c in chunks:
            m = c.in_idx.numel()
            torch.index_select(xs, 0, c.in_idx, out=gathered[:m])
            for k, a, b in c.segments:
                torch.mm(gathered[a:b], weight[k], out=product[a:b])
            out[c.r0:c.r1].addmm_(c.scatter, product[:m])

    _run_split(run, _chunks(kmap, weight))


def _conv_per_offset(out: torch.Tensor, xs: torch.Tensor, weight: torch.Tensor, kmap: KernelMap) -> None:
    """out += the non-centre pairs, offset by offset through two reused buffers (CUDA, other dtypes)."""
    m_max = _max_pairs(kmap)
    gathered = xs.new_empty(m_max, weight.shape[1])
    product = xs.new_empty(m_max, weight.shape[2])
    for k in range(kmap.volume):
        src = kmap.in_idx[k]
        if k == kmap.center or src.numel() == 0:
            continue
        m = src.numel()
        torch.index_select(xs, 0, src, out=gathered[:m])
        torch.mm(gathered[:m], weight[k], out=product[:m])
        out.index_add_(0, kmap.out_idx[k], product[:m])


def _backward_chunked(grad_x, grad_w, xs, gs, weight, kmap: KernelMap) -> None:
    """Non-centre pairs of the backward pass, chunked by input row (the transposed map's outputs):
    grad_x[i] += gs[o] @ W[k]^T and grad_w[k] += xs[i]^T @ gs[o] share one gather of gs."""
    def run(chunks):
        # grad_x rows are disjoint between chunks; each thread sums its own weight gradient
        m_max = max((c.in_idx.numel() for c in chunks), default=0)
        g_rows = gs.new_empty(m_max, gs.shape[1])
        x_rows = xs.new_empty(m_max, xs.shape[1])
        product = xs.new_empty(m_max, xs.shape[1])
        part_w = None if grad_w is None else torch.zeros_like(grad_w)
        for c in chunks:
            m = c.in_idx.numel()
            torch.index_select(gs, 0, c.in_idx, out=g_rows[:m])
            if part_w is not None:
                torch.index_select(xs, 0, c.out_idx, out=x_rows[:m])
            for k, a, b in c.segments:
                if part_w is not None:
                    _add_xt_g(part_w[k], x_rows[a:b], g_rows[a:b])
                if grad_x is not None:
                    torch.mm(g_rows[a:b], weight[k].t(), out=product[a:b])
            if grad_x is not None:
                grad_x[c.r0:c.r1].addmm_(c.scatter, product[:m])
        return part_w

    for part_w in _run_split(run, _chunks(kmap.transposed(), weight)):
        if part_w is not None:
            grad_w += part_w


def _backward_per_offset(grad_x, grad_w, xs, gs, weight, kmap: KernelMap) -> None:
    """Non-centre pairs of the backward pass, offset by offset (CUDA, other dtypes)."""
    m_max = _max_pairs(kmap)
    g_rows, x_rows = gs.new_empty(m_max, gs.shape[1]), xs.new_empty(m_max, xs.shape[1])
    product = xs.new_empty(m_max, xs.shape[1])
    for k in range(kmap.volume):
        src = kmap.in_idx[k]
        if k == kmap.center or src.numel() == 0:
            continue
        m = src.numel()
        g = torch.index_select(gs, 0, kmap.out_idx[k], out=g_rows[:m])
        if grad_w is not None:
            _add_xt_g(grad_w[k], torch.index_select(xs, 0, src, out=x_rows[:m]), g)
        if grad_x is not None:
            torch.mm(g, weight[k].t(), out=product[:m])
            grad_x.index_add_(0, src, product[:m])


class _SparseConv(torch.autograd.Function):
    """out[out_idx[k]] += feats[in_idx[k]] @ weight[k]; feats [N_in, Cin], weight [K, Cin, Cout].

    Gathered rows and GEMM results go through working buffers of at most one chunk (CPU) or one
    offset (elsewhere) of pairs, never O(all pairs * C).
    """

    @staticmethod
    def forward(ctx, feats, weight, kmap: KernelMap):
        xs = _positions(feats, kmap.in_order)
        ctx.save_for_backward(xs, weight)
        ctx.kmap = kmap
        if kmap.center is not None:
            out = torch.mm(xs, weight[kmap.center])
        else:
            out = xs.new_zeros(kmap.n_out, weight.shape[2])
        (_conv_chunked if _cpu_float(xs) else _conv_per_offset)(out, xs, weight, kmap)
        return out if kmap.out_order is None else out.index_select(0, kmap.out_inverse)

    @staticmethod
    @_autocast_off
    def backward(ctx, grad_out):
        xs, weight = ctx.saved_tensors
        kmap = ctx.kmap
        gs = _positions(grad_out, kmap.out_order)
        grad_x = grad_w = None
        if ctx.needs_input_grad[1]:
            grad_w = torch.zeros_like(weight)
            if kmap.center is not None:
                _add_xt_g(grad_w[kmap.center], xs, gs)
        if ctx.needs_input_grad[0]:
            if kmap.center is not None:
                grad_x = torch.mm(gs, weight[kmap.center].t())
            else:
                grad_x = xs.new_zeros(kmap.n_in, weight.shape[1])
        (_backward_chunked if _cpu_float(xs) else _backward_per_offset)(grad_x, grad_w, xs, gs, weight, kmap)
        if grad_x is not None and kmap.in_order is not None:
            grad_x = grad_x.index_select(0, kmap.in_inverse)
        return grad_x, grad_w, None


class _DepthwiseConv(torch.autograd.Function):
    """out[out_idx[k]] += feats[in_idx[k]] * weight[k]; feats [N, C], weight [K, C]."""

    @staticmethod
    def forward(ctx, feats, weight, kmap: KernelMap):
        xs = _positions(feats, kmap.in_order)
        ctx.save_for_backward(xs, weight)
        ctx.kmap = kmap
        acc = _accumulator(xs.dtype)
        out = (xs * weight[kmap.center]).to(acc)
        for k in range(kmap.volume):
            if k == kmap.center or kmap.in_idx[k].numel() == 0:
                continue
            _scatter_add(out, kmap.out_idx[k], xs.index_select(0, kmap.in_idx[k]).mul_(weight[k]).to(acc), kmap)
        out = out.to(xs.dtype)
        return out if kmap.out_order is None else out.index_select(0, kmap.out_inverse)

    @staticmethod
    @_autocast_off
    def backward(ctx, grad_out):
        xs, weight = ctx.saved_tensors
        kmap = ctx.kmap
        gs = _positions(grad_out, kmap.out_order)
        acc = _accumulator(gs.dtype)
        grad_x = (gs * weight[kmap.center]).to(acc)
        grad_w = torch.zeros_like(weight)
        grad_w[kmap.center] = (xs * gs).sum(0)
        for k in range(kmap.volume):
            if k == kmap.center or kmap.in_idx[k].numel() == 0:
                continue
            src = kmap.in_idx[k]
            g = gs.index_select(0, kmap.out_idx[k])
            grad_w[k] = (xs.index_select(0, src) * g).sum(0)
            _scatter_add(grad_x, src, g.mul_(weight[k]).to(acc), kmap)
        grad_x = grad_x.to(gs.dtype)
        if kmap.in_order is not None:
            grad_x = grad_x.index_select(0, kmap.in_inverse)
        return grad_x, grad_w, None


def conv(feats: torch.Tensor, weight: torch.Tensor, kmap: KernelMap) -> torch.Tensor:
    """Sparse convolution by a kernel map: feats [N_in, Cin], weight [K, Cin, Cout] -> [N_out, Cout]."""
    return _apply(_SparseConv, feats, weight, kmap)


def depthwise(feats: torch.Tensor, weight: torch.Tensor, kmap: KernelMap) -> torch.Tensor:
    """Channelwise sparse convolution: feats [N, C], weight [K, C] -> [N, C]."""
    return _apply(_DepthwiseConv, feats, weight, kmap)


class TorchEngine:
    """Engine interface used by lib.sparse.nn; every method returns features in ctx row order."""

    name = "torch"

    def subm_conv(self, x, weight, kernel_size: int, dilation: int):
        return conv(x.feats, weight, x.ctx.kernel_map(x.stride, kernel_size, dilation))

    def down_conv(self, x, weight):
        return conv(x.feats, weight, x.ctx.down_map(x.stride))

    def up_conv(self, x, weight):
        return conv(x.feats, weight, x.ctx.down_map(x.stride // 2).transposed())

    def depthwise_conv(self, x, weight, kernel_size: int, dilation: int):
        return depthwise(x.feats, weight, x.ctx.kernel_map(x.stride, kernel_size, dilation))


register_engine(EngineSpec("torch", TorchEngine, priority={"cuda": 40, "cpu": 10}))
