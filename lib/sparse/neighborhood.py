"""Chunked neighbourhood primitives for voxel attention over a neighbour table.

Both transformer block families reduce to these: a neighbour table nbr [N, K] (int64 rows of the
source voxels, -1 where the offset is empty; lib.sparse.nn.neighbor_table), per-pair attention
logits (`pair_scores`), their softmax over the K offsets (`masked_softmax`), and the weighted
per-channel sum over the neighbourhood (`neighborhood_aggregate`). A term that depends on the
offset only, such as a position encoding PE(p_ij) of p_ij = offsets[k] * stride, needs no pair
tensor either: sum_k a[i, k, h] PE_k is torch.einsum("nkh,khc->nhc", a, pe.view(K, H, C // H)),
a taken from masked_softmax (zero at empty offsets).

Memory: every function walks the rows in chunks, so no [N, K, C] tensor of pairs is ever built or
kept for backward. neighborhood_aggregate touches only the occupied pairs: its working buffers hold
a chunk's occupied pairs x C elements (at most chunk_rows x K x C); pair_scores gathers kv for all K
slots of a chunk's rows. `chunk_rows=None` picks the chunk from a per-device element budget
(CHUNK_ELEMENTS) on rows x K x C.

Precision (autocast included): neighborhood_aggregate runs with autocast off and computes in the
promoted dtype of its float inputs, at least float32 (half and bfloat16 inputs are upcast chunk
by chunk, float64 stays float64); the output has the promoted dtype of the inputs (float16 v with
float32 a gives float32), each gradient the dtype of its input. masked_softmax likewise computes
and returns at least float32. pair_scores runs score_fn under the caller's autocast state.
"""

import math
from typing import NamedTuple

import torch
from torch.utils.checkpoint import checkpoint

from .mixing import mixed_depthwise

# elements of one chunk's [rows, K, C] working buffers. CPU: a few MiB (cache-sized buffers,
# scripts/bench_neighborhood.py); CUDA: large enough that kernel launches do not dominate.
CHUNK_ELEMENTS = {"cpu": 1 << 22, "cuda": 1 << 24}


def chunk_rows_for(n: int, per_row: int, device: torch.device, chunk_rows=None) -> int:
    """Rows per chunk: `chunk_rows` if given, else CHUNK_ELEMENTS[device] // per_row (>= 1)."""
    if chunk_rows is None:
        budget = CHUNK_ELEMENTS.get(torch.device(device).type, CHUNK_ELEMENTS["cuda"])
        chunk_rows = budget // max(1, per_row)
    elif chunk_rows < 1:
        raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")
    return max(1, min(int(chunk_rows), n))


def _compute_dtype(*tensors) -> torch.dtype:
    dtype = torch.float32
    for t in tensors:
        if t is not None:
            dtype = torch.promote_types(dtype, t.dtype)
    return dtype


def _no_autocast(device: torch.device):
    return torch.autocast(device_type=device.type, enabled=False)


def _check_aggregate(v, nbr, a, w):
    if v.ndim != 2:
        raise ValueError(f"neighborhood_aggregate: v must be [M, C], got shape {tuple(v.shape)}")
    if nbr.ndim != 2 or nbr.dtype != torch.int64:
        raise ValueError(f"neighborhood_aggregate: nbr must be int64 [N, K], got {nbr.dtype} {tuple(nbr.shape)}")
    n, k = nbr.shape
    c = v.shape[1]
    if a.ndim != 3 or a.shape[0] not in (1, n) or a.shape[1] not in (1, k):
        raise ValueError(f"neighborhood_aggregate: a must be [N, K, H] ({n}, {k}, H) or broadcastable "
                         f"with 1 in the first two places, got shape {tuple(a.shape)}")
    if c % a.shape[2]:
        raise ValueError(f"neighborhood_aggregate: heads H={a.shape[2]} must divide channels C={c}")
    if w is not None and tuple(w.shape) != (k, c):
        raise ValueError(f"neighborhood_aggregate: w must be [K, C] = ({k}, {c}), got shape {tuple(w.shape)}")


class _ChunkPairs(NamedTuple):
    """The occupied (row, offset) pairs of rows r0:r0+n of a neighbour table, row by row.

    rows [m] row within the chunk (ascending), offset [m], src [m] source row, a_row [m] row of
    a.view(-1, H) holding the pair's weights (a's broadcast axes folded in), counts [n] pairs per row.
    """
    rows: torch.Tensor
    offset: torch.Tensor
    src: torch.Tensor
    a_row: torch.Tensor
    counts: torch.Tensor


def _chunk_pairs(nbr: torch.Tensor, r0: int, rows: int, a_shape) -> _ChunkPairs:
    idx = nbr[r0:r0 + rows]
    valid = idx.ge(0)
    row, offset = valid.nonzero(as_tuple=True)
    a_row = torch.zeros_like(row)
    if a_shape[0] != 1:
        a_row += (row + r0) * a_shape[1]
    if a_shape[1] != 1:
        a_row += offset
    return _ChunkPairs(row, offset, idx[row, offset], a_row, valid.sum(1))


def _csr_rows(t: torch.Tensor) -> bool:
    """Whether _sum_rows uses a CSR product (CPU) rather than index_add_ (CUDA's atomics)."""
    return t.device.type == "cpu"


def _sum_rows(contrib: torch.Tensor, pairs: _ChunkPairs) -> torch.Tensor:
    """[m, C] per-pair values -> [n, C] sums per chunk row. CPU: one sparse CSR product (pairs
    come row by row, so the CSR needs no sort; MKL beats index_add_ there); elsewhere index_add_."""
    n = pairs.counts.numel()
    if not _csr_rows(contrib):
        return contrib.new_zeros(n, contrib.shape[1]).index_add_(0, pairs.rows, contrib)
    m = contrib.shape[0]
    crow = torch.zeros(n + 1, dtype=torch.int32)
    torch.cumsum(pairs.counts, 0, out=crow[1:])
    # int32 indices: what MKL's sparse kernels take natively
    ones = torch.sparse_csr_tensor(crow, torch.arange(m, dtype=torch.int32), torch.ones(m, dtype=contrib.dtype),
                                   size=(n, m), check_invariants=False)
    return ones @ contrib


def _add_grad_a(grad_a: torch.Tensor, ga: torch.Tensor, pairs: _ChunkPairs, r0: int, a_shape) -> None:
    """Add the per-pair gradients ga [m, H] into grad_a, shaped like a ([N or 1, K or 1, H])."""
    if a_shape[0] == 1:  # shared over voxels: sum per offset (or over all pairs)
        if a_shape[1] == 1:
            grad_a[0, 0] += ga.sum(0)
        else:
            grad_a[0].index_add_(0, pairs.offset, ga)
    elif a_shape[1] == 1:  # one weight per voxel and head: sum each row's pairs
        grad_a[r0:r0 + pairs.counts.numel(), 0] = _sum_rows(ga, pairs)
    else:  # one weight per pair: every (row, offset) once, a plain scatter
        grad_a[r0:r0 + pairs.counts.numel()][pairs.rows, pairs.offset] = ga


class _NeighborhoodAggregate(torch.autograd.Function):
    """out[i, c] = sum_k a[i, k, head(c)] * w[k, c] * v[nbr[i, k], c]; see neighborhood_aggregate.

    Works on the occupied pairs only, chunk by chunk (working buffers [pairs of the chunk, C]).
    Saves v, a, w and nbr (no gathered copies); backward re-gathers each chunk.
    """

    @staticmethod
    def forward(ctx, v, a, w, nbr, chunk_rows):
        n, k = nbr.shape
        c, h = v.shape[1], a.shape[2]
        dtype = _compute_dtype(v, a, w)
        rows = chunk_rows_for(n, k * c, v.device, chunk_rows)
        out = torch.empty(n, c, dtype=torch.promote_types(torch.promote_types(v.dtype, a.dtype),
                                                          v.dtype if w is None else w.dtype), device=v.device)
        a_flat = a.reshape(-1, h)
        with _no_autocast(v.device):
            for r0 in range(0, n, rows):
                pairs = _chunk_pairs(nbr, r0, rows, a.shape)
                m = pairs.src.numel()
                g = v.index_select(0, pairs.src).to(dtype).view(m, h, c // h)
                g.mul_(a_flat.index_select(0, pairs.a_row).to(dtype).unsqueeze(-1))
                g = g.view(m, c)
                if w is not None:
                    g.mul_(w.index_select(0, pairs.offset).to(dtype))
                out[r0:r0 + rows] = _sum_rows(g, pairs)
        ctx.save_for_backward(v, a, w, nbr)
        ctx.rows = rows
        return out

    @staticmethod
    def backward(ctx, grad_out):
        v, a, w, nbr = ctx.saved_tensors
        need_v, need_a, need_w = ctx.needs_input_grad[:3]
        n, k = nbr.shape
        c, h = v.shape[1], a.shape[2]
        cg = c // h
        dtype = _compute_dtype(v, a, w)
        grad_v = torch.zeros(v.shape, dtype=dtype, device=v.device) if need_v else None
        grad_a = torch.zeros(a.shape, dtype=dtype, device=a.device) if need_a else None
        grad_w = torch.zeros(k, c, dtype=dtype, device=v.device) if need_w else None
        a_flat = a.reshape(-1, h)
        with _no_autocast(v.device):
            for r0 in range(0, n, ctx.rows):
                pairs = _chunk_pairs(nbr, r0, ctx.rows, a.shape)
                m = pairs.src.numel()
                go = grad_out[r0:r0 + ctx.rows].index_select(0, pairs.rows).to(dtype)  # [m, C] per pair
                coef = a_flat.index_select(0, pairs.a_row).to(dtype).unsqueeze(-1)  # [m, H, 1]
                w_p = None if w is None else w.index_select(0, pairs.offset).to(dtype)  # [m, C]
                if need_a or need_w:
                    prod = v.index_select(0, pairs.src).to(dtype).mul_(go)  # v[nbr] * g_out per pair
                    if need_w:
                        grad_w.index_add_(0, pairs.offset, (prod.view(m, h, cg) * coef).view(m, c))
                    if need_a:
                        ga = (prod if w_p is None else prod.mul_(w_p)).view(m, h, cg).sum(-1)
                        _add_grad_a(grad_a, ga, pairs, r0, a.shape)
                if need_v:
                    t = go.view(m, h, cg).mul_(coef).view(m, c)
                    if w_p is not None:
                        t.mul_(w_p)
                    grad_v.index_add_(0, pairs.src, t)
        return (None if grad_v is None else grad_v.to(v.dtype),
                None if grad_a is None else grad_a.to(a.dtype),
                None if grad_w is None else grad_w.to(w.dtype),
                None, None)


def neighborhood_aggregate(v: torch.Tensor, nbr: torch.Tensor, a: torch.Tensor, w: torch.Tensor = None,
                           chunk_rows: int = None) -> torch.Tensor:
    """Per-head weighted, per-channel sum over each voxel's neighbourhood: [N, C].

    v [M, C] source features; nbr int64 [N, K] source rows (-1 = empty); a [N, K, H] weights per
    voxel, offset and head (a first or second size of 1 broadcasts); w [K, C] depthwise kernel or
    None (ones). H divides C and head(c) = c // (C // H) (contiguous channel groups):
        out[i, c] = sum_k a[i, k, head(c)] * w[k, c] * v[nbr[i, k], c],  empty pairs contribute 0.
    a [N or 1, 1, H] (one weight per voxel and head, the codebook blocks' case): tile by tile over
    the table's cached pair lists (lib.sparse.mixing.mixed_depthwise with D = 1); chunk_rows unused.
    a [N or 1, K, H] (one weight per pair, attention): forward and backward run over chunks of
    `chunk_rows` rows (None: from CHUNK_ELEMENTS); on CUDA the sums use atomics (index_add_), so
    results may differ in the last bits from run to run.
    Gradients flow to v, a and w. Empty pairs are skipped, never read.
    Precision: see the module docstring.
    """
    _check_aggregate(v, nbr, a, w)
    if a.shape[1] == 1:
        return mixed_depthwise(v, a, [v.new_ones(nbr.shape[1], v.shape[1]) if w is None else w], [nbr])
    return _NeighborhoodAggregate.apply(v, a, w, nbr, chunk_rows)


def _as_tuple(x):
    return (tuple(x), True) if isinstance(x, (tuple, list)) else ((x,), False)


def pair_scores(score_fn, q, kv, nbr: torch.Tensor, chunk_rows: int = None, recompute: bool = None) -> torch.Tensor:
    """Attention logits of every (voxel, offset) pair, computed chunk by chunk: [N, K, H].

    q: [N, ...] tensor (or tuple of them) of the voxels; kv: [M, ...] tensor (or tuple) of the
    sources; nbr int64 [N, K]. For each chunk of rows r0:r1 this calls
        score_fn(q[r0:r1], kv[nbr[r0:r1]], valid)  ->  [n, K, H]
    with kv gathered to [n, K, ...] (a tuple when kv is one; empty slots hold source row 0) and
    valid = nbr[r0:r1] >= 0 [n, K] bool, then sets every empty slot to -inf (whatever score_fn
    returned there, with no gradient flowing back to it), so a softmax over K leaves them out
    (see masked_softmax for rows with no neighbour at all).
    recompute (default: when grad is enabled): each chunk runs under activation checkpointing, so
    only the [N, K, H] result is kept and the chunk's gathers and score_fn intermediates are
    recomputed in backward (score_fn must then be deterministic up to its RNG, which is restored).
    Gradients reach q, kv and any parameter score_fn uses.
    """
    qs, q_tuple = _as_tuple(q)
    kvs, kv_tuple = _as_tuple(kv)
    if nbr.ndim != 2 or nbr.dtype != torch.int64:
        raise ValueError(f"pair_scores: nbr must be int64 [N, K], got {nbr.dtype} {tuple(nbr.shape)}")
    n, k = nbr.shape
    if any(t.shape[0] != n for t in qs):
        raise ValueError(f"pair_scores: q must have N={n} rows, got {[tuple(t.shape) for t in qs]}")
    if recompute is None:
        recompute = torch.is_grad_enabled()
    per_row = k * sum(math.prod(t.shape[1:]) for t in kvs)
    rows = chunk_rows_for(n, per_row, nbr.device, chunk_rows)

    def chunk(idx, *q_rows):
        valid = idx.ge(0)
        flat = idx.clamp(min=0).reshape(-1)
        gathered = tuple(t.index_select(0, flat).view(idx.shape[0], k, *t.shape[1:]) for t in kvs)
        s = score_fn(q_rows if q_tuple else q_rows[0], gathered if kv_tuple else gathered[0], valid)
        if s.ndim != 3 or s.shape[:2] != idx.shape:
            raise ValueError(f"pair_scores: score_fn must return [n, K, H] = ({idx.shape[0]}, {k}, H), "
                             f"got shape {tuple(s.shape)}")
        return s.masked_fill(~valid.unsqueeze(-1), float("-inf"))

    parts = []
    for r0 in range(0, n, rows):
        args = (nbr[r0:r0 + rows],) + tuple(t[r0:r0 + rows] for t in qs)
        parts.append(checkpoint(chunk, *args, use_reentrant=False) if recompute else chunk(*args))
    return parts[0] if len(parts) == 1 else torch.cat(parts, 0)


def masked_softmax(scores: torch.Tensor, nbr: torch.Tensor) -> torch.Tensor:
    """Softmax over the K offsets of scores [N, K, H], empty neighbours (nbr [N, K] == -1) left out.

    Empty slots get weight 0; a row with no valid neighbour gets all zeros (never NaN), in value and
    gradient. Computed and returned in at least float32.
    """
    if scores.ndim != 3 or scores.shape[:2] != nbr.shape:
        raise ValueError(f"masked_softmax: scores must be [N, K, H] with [N, K] = {tuple(nbr.shape)}, "
                         f"got shape {tuple(scores.shape)}")
    s = scores.to(torch.promote_types(scores.dtype, torch.float32))
    s = s.masked_fill(nbr.lt(0).unsqueeze(-1), float("-inf"))
    top = s.detach().amax(1, keepdim=True)
    top = torch.where(torch.isfinite(top), top, torch.zeros_like(top))  # all-empty rows: exp(-inf) = 0
    e = torch.exp(s - top)
    return e / e.sum(1, keepdim=True).clamp_min(torch.finfo(s.dtype).tiny)
