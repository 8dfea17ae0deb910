"""The pure-PyTorch engine: gather -> GEMM -> scatter-add over the kernel map's pairs (CPU and CUDA).

On CPU (float32/64, bfloat16) `_SparseConv` runs the fused C++ kernel of lib.sparse.conv_native
where it builds (VOXSEG_CONV_KERNEL=torch turns it off). Otherwise, on CPU (float32/64) the pairs go in chunks of consecutive output rows (KernelMap.chunks): one gather,
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

import torch

from .. import conv_native, threads
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


def _use_kernel(t: torch.Tensor) -> bool:
    """True where the C++ kernel (lib.sparse.conv_native) runs the convolution: CPU float32/64 and
    bfloat16, unless VOXSEG_CONV_KERNEL=torch or VOXSEG_TORCH_CONV_PATH=per_offset says otherwise."""
    path = os.environ.get("VOXSEG_TORCH_CONV_PATH", "auto")
    if path not in PATHS:
        raise ValueError(f"VOXSEG_TORCH_CONV_PATH must be one of {', '.join(PATHS)}, got {path!r}")
    return path == "auto" and conv_native.active(t.device, t.dtype)


def _autocast_dtype(t: torch.Tensor):
    """The dtype autocast gives a GEMM on t's device now, or None when autocast is off there."""
    device = t.device.type
    if torch.amp.is_autocast_available(device) and torch.is_autocast_enabled(device):
        return torch.get_autocast_dtype(device)
    return None


def _apply(apply, feats: torch.Tensor, weights: list):
    """apply(feats, weights) with autocast resolved here: every operand in the autocast dtype,
    autocast off inside (its per-op casts would meet fp32 buffers in addmm_ / index_add_)."""
    dtype = _autocast_dtype(feats)
    if dtype is None:
        return apply(feats, weights)
    with torch.autocast(feats.device.type, enabled=False):
        return apply(feats.to(dtype), [w.to(dtype) for w in weights])


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
    def run(ctx, *grad_outs):
        given = next((g for g in grad_outs if g is not None), None)
        device = None if given is None else given.device.type  # None: no output got a gradient
        if device is None or not torch.amp.is_autocast_available(device):
            return backward(ctx, *grad_outs)
        with torch.autocast(device, enabled=False):
            return backward(ctx, *grad_outs)
    return run


def _chunks(kmap: KernelMap, weight: torch.Tensor) -> list:
    return kmap.chunks(PAIRS_PER_CHUNK, weight.dtype)


def _run_split(fn, chunks: list) -> list:
    """[fn(part) for each part of the chunks], the parts run by torch.get_num_threads() Python
    threads while torch's own ops run single-threaded. Parallel ops would each wait for their
    partner threads, which on a loaded machine costs a scheduler time slice per op (measured
    10-30x slower with 2 threads at load 2 on 2 cores); here the threads meet once per call."""
    n = min(torch.get_num_threads(), len(chunks))
    if n <= 1:
        return [fn(chunks)]
    pool = threads.executor(n)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        futures = [pool.submit(_without_grad, fn, chunks[i::n]) for i in range(n)]
        return [f.result() for f in futures]
    finally:
        torch.set_num_threads(before)


def _without_grad(fn, part):
    # grad mode is per thread: the pool threads do not inherit the autograd Function's no_grad
    with torch.no_grad():
        return fn(part)


def _positions(rows_tensor: torch.Tensor, order) -> torch.Tensor:
    """Rows -> sorted-key positions (the map's index space); identity when rows are sorted."""
    return rows_tensor.contiguous() if order is None else rows_tensor.index_select(0, order)


def _max_pairs(kmap: KernelMap) -> int:
    return max((i.numel() for k, i in enumerate(kmap.in_idx) if k != kmap.center), default=0)


def _conv_chunked(outs, xs: torch.Tensor, weights, kmap: KernelMap) -> None:
    """outs[d] += the non-centre pairs by weights[d], chunk by chunk: one gather of the chunk's
    rows for all the weights, then per weight one GEMM per offset and one CSR product."""
    # Narrow outputs (a choice logit's few per-head scalars): the GEMMs run transposed, W[k]^T @ rows^T,
    # then one transposing copy per chunk; MKL on one thread took ~4x longer on rows @ W[k] with
    # Cout = 8, Cin = 64 (600 rows: 45 us against 13 us)
    narrow = [w.shape[2] < w.shape[1] for w in weights]
    weights_t = [w.transpose(1, 2).contiguous() if n else None for w, n in zip(weights, narrow)]

    def run(chunks):
        # chunks own disjoint output rows, so the threads never write the same row
        m_max = max((c.in_idx.numel() for c in chunks), default=0)
        gathered = xs.new_empty(m_max, xs.shape[1])
        products = [xs.new_empty(m_max, w.shape[2]) for w in weights]
        products_t = [xs.new_empty(w.shape[2], m_max) if n else None for w, n in zip(weights, narrow)]
        for c in chunks:
            m = c.in_idx.numel()
            torch.index_select(xs, 0, c.in_idx, out=gathered[:m])
            for out, weight, weight_t, product, product_t in zip(outs, weights, weights_t, products, products_t):
                for k, a, b in c.segments:
                    if weight_t is not None:
                        torch.mm(weight_t[k], gathered[a:b].t(), out=product_t[:, a:b])
                    else:
                        torch.mm(gathered[a:b], weight[k], out=product[a:b])
                if weight_t is not None:
                    product[:m].copy_(product_t[:, :m].t())
                out[c.r0:c.r1].addmm_(c.scatter, product[:m])

    _run_split(run, _chunks(kmap, weights[0]))


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


def _backward_chunked(grad_x, grad_ws, xs, gss, weights, kmap: KernelMap) -> None:
    """Non-centre pairs of the backward pass of the convolutions of xs by weights[d] over one map,
    chunked by input row (the transposed map's outputs): grad_x[i] += sum_d gss[d][o] @ W_d[k]^T
    and grad_ws[d][k] += xs[i]^T @ gss[d][o]; one gather of xs's rows serves every weight gradient,
    one gather of each gss[d] both of its products, one scatter all of grad_x's."""
    def run(chunks):
        # grad_x rows are disjoint between chunks; each thread sums its own weight gradients
        m_max = max((c.in_idx.numel() for c in chunks), default=0)
        g_rows = [gs.new_empty(m_max, gs.shape[1]) for gs in gss]
        x_rows = xs.new_empty(m_max, xs.shape[1])
        product = xs.new_empty(m_max, xs.shape[1])
        parts_w = [None if gw is None else torch.zeros_like(gw) for gw in grad_ws]
        any_w = any(p is not None for p in parts_w)
        for c in chunks:
            m = c.in_idx.numel()
            for gs, rows in zip(gss, g_rows):
                torch.index_select(gs, 0, c.in_idx, out=rows[:m])
            if any_w:
                torch.index_select(xs, 0, c.out_idx, out=x_rows[:m])
            for k, a, b in c.segments:
                for d, (weight, rows, part_w) in enumerate(zip(weights, g_rows, parts_w)):
                    if part_w is not None:
                        _add_xt_g(part_w[k], x_rows[a:b], rows[a:b])
                    if grad_x is not None:
                        if d == 0:
                            torch.mm(rows[a:b], weight[k].t(), out=product[a:b])
                        else:
                            product[a:b].addmm_(rows[a:b], weight[k].t())
            if grad_x is not None:
                grad_x[c.r0:c.r1].addmm_(c.scatter, product[:m])
        return parts_w

    for parts_w in _run_split(run, _chunks(kmap.transposed(), weights[0])):
        for gw, part_w in zip(grad_ws, parts_w):
            if part_w is not None:
                gw += part_w


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


def _mm(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """x @ w. For narrow w (Cout < Cin), (w^T @ x^T)^T: MKL on one thread took ~4x longer on the
    direct product with Cout = 8, Cin = 64 (a CodedVTR choice convolution's centre)."""
    if w.shape[1] < w.shape[0]:
        return torch.mm(w.t(), x.t()).t().contiguous()
    return torch.mm(x, w)


class _SparseConv(torch.autograd.Function):
    """For each pair (weight_d, kmap_d) of convolutions reading the same input:
    out_d[out_idx[k]] += feats[in_idx[k]] @ weight_d[k]; feats [N_in, Cin], weight_d [K_d, Cin, Cout_d].

    Gathered rows and GEMM results go through working buffers of at most one chunk (CPU) or one
    offset (elsewhere) of pairs, never O(all pairs * C). The maps must share their input (and, for
    more than one, output) row order, which submanifold maps of one coordinate set do: then the
    gradient of feats is one buffer that every convolution adds into (one [N_in, Cin] tensor, not
    one per convolution plus the sums autograd would make of them).
    """

    @staticmethod
    def forward(ctx, feats, kmaps, *weights):
        ctx.set_materialize_grads(False)
        xs = _positions(feats, kmaps[0].in_order)
        ctx.save_for_backward(xs, *weights)
        ctx.kmaps = kmaps
        if _use_kernel(xs):
            outs = [conv_native.forward(xs, weight, kmap) for weight, kmap in zip(weights, kmaps)]
            return tuple(out if kmap.out_order is None else out.index_select(0, kmap.out_inverse)
                         for out, kmap in zip(outs, kmaps))
        outs = []
        for weight, kmap in zip(weights, kmaps):
            if kmap.center is not None:
                outs.append(_mm(xs, weight[kmap.center]))
            else:
                outs.append(xs.new_zeros(kmap.n_out, weight.shape[2]))
        for kmap, ds in _by_map(kmaps, range(len(kmaps))):
            if _cpu_float(xs):  # one gather per chunk for all the weights on this map
                _conv_chunked([outs[d] for d in ds], xs, [weights[d] for d in ds], kmap)
            else:
                for d in ds:
                    _conv_per_offset(outs[d], xs, weights[d], kmap)
        return tuple(out if kmap.out_order is None else out.index_select(0, kmap.out_inverse)
                     for out, kmap in zip(outs, kmaps))

    @staticmethod
    @_autocast_off
    def backward(ctx, *grad_outs):
        xs, *weights = ctx.saved_tensors
        kmaps = ctx.kmaps
        need_x, need_ws = ctx.needs_input_grad[0], ctx.needs_input_grad[2:]
        live = [d for d, g in enumerate(grad_outs) if g is not None]
        gss = {d: _positions(grad_outs[d], kmaps[d].out_order) for d in live}
        if _use_kernel(xs):
            grad_x, grad_ws = conv_native.backward(xs, [gss.get(d) for d in range(len(weights))], weights, kmaps,
                                                   need_x and bool(live), need_ws)
            if grad_x is not None and kmaps[0].in_order is not None:
                grad_x = grad_x.index_select(0, kmaps[0].in_inverse)
            return (grad_x, None, *grad_ws)
        grad_x = None
        grad_ws = [None] * len(weights)
        for d in live:
            weight, kmap = weights[d], kmaps[d]
            if need_ws[d]:
                grad_ws[d] = torch.zeros_like(weight)
                if kmap.center is not None:
                    _add_xt_g(grad_ws[d][kmap.center], xs, gss[d])
            if need_x and kmap.center is not None:
                if grad_x is None:
                    grad_x = torch.mm(gss[d], weight[kmap.center].t())
                else:
                    grad_x.addmm_(gss[d], weight[kmap.center].t())
        if need_x and grad_x is None and live:
            grad_x = xs.new_zeros(kmaps[0].n_in, xs.shape[1])
        for kmap, ds in _by_map(kmaps, live):
            if _cpu_float(xs):  # one gather per chunk for all the gradients on this map
                _backward_chunked(grad_x, [grad_ws[d] for d in ds], xs, [gss[d] for d in ds],
                                  [weights[d] for d in ds], kmap)
            else:
                for d in ds:
                    _backward_per_offset(grad_x, grad_ws[d], xs, gss[d], weights[d], kmap)
        if grad_x is not None and kmaps[0].in_order is not None:
            grad_x = grad_x.index_select(0, kmaps[0].in_inverse)
        return (grad_x, None, *grad_ws)


def _by_map(kmaps, indices):
    """[(map, [indices of the entries on it])] in first-seen order, maps compared by identity."""
    groups = {}
    for d in indices:
        groups.setdefault(id(kmaps[d]), (kmaps[d], []))[1].append(d)
    return list(groups.values())


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
    return conv_many(feats, [weight], [kmap])[0]


def conv_many(feats: torch.Tensor, weights, kmaps) -> list:
    """[conv(feats, w, m) for w, m in zip(weights, kmaps)] as one op where the maps share their row
    orders (submanifold maps of one coordinate set): one gradient buffer for feats."""
    weights, kmaps = list(weights), list(kmaps)
    first = kmaps[0]
    if any(m.in_order is not first.in_order or m.out_order is not first.out_order for m in kmaps[1:]):
        return [conv(feats, w, m) for w, m in zip(weights, kmaps)]
    return list(_apply(lambda f, ws: _SparseConv.apply(f, tuple(kmaps), *ws), feats, weights))


def depthwise(feats: torch.Tensor, weight: torch.Tensor, kmap: KernelMap) -> torch.Tensor:
    """Channelwise sparse convolution: feats [N, C], weight [K, C] -> [N, C]."""
    return _apply(lambda f, ws: _DepthwiseConv.apply(f, ws[0], kmap), feats, [weight])


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
