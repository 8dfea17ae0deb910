"""Mixed depthwise neighbourhood sums, worked through in tiles of output rows.

    y[i, c]   = sum_d a[i, d, head(c)] * sum_k w_d[k, c] * v[tables[d][i, k], c]
    out[i, p] = sum_c y[i, c] * out_weight[p, c]          (optional fused projection; else out = y)

The codebook attention of CodedVTR and its discrete variant are this op (a = the mixing weights,
w_d = the codebook), and so is every head-weighted depthwise sum (D = 1).

Order of work: tiles of TILE rows of the output. In a tile, first the centre offset, which is the
row itself in every submanifold table (one slice of v for all elements), then, table by table, all
the tile's other occupied pairs at once (cut into pieces of at most PIECE_PAIRS): each piece is
gathered from v, multiplied by its pairs' combined weights sum_d a[i, d, head(c)] w_d[k, c] (the
weight rows gathered by offset; every element that uses the same table object, as the discrete
block's patterns on one cube do, shares the gather) and added into a [TILE, C] accumulator. So:
  - no [N, K, C] tensor and no element's [N, C] sum exists, and y itself is never whole when the
    projection is fused: the tile of y is projected as soon as it is complete;
  - the Python work is a few dozen tensor ops per tile and table, whatever the kernel size;
  - backward walks the same tiles, rebuilding the tile of y where the projection's weight gradient
    needs it, so nothing but the inputs is saved (v, a, the weights, the tables).
A folded BatchNorm + ReLU of v (lib.sparse.norm_relu) is applied to each gathered piece.
Sums: CPU index_add_ runs in order, so results are deterministic there; CUDA's index_add_ uses
atomics, so sums over a row's offsets may differ in the last bits from run to run.

Precision: computes with autocast off in the promoted dtype of the float inputs, at least float32;
the output has the inputs' promoted dtype, each gradient the dtype of its input.
"""
import functools
from typing import NamedTuple

import torch
from . import mixing_native, norm_relu
from .kernel_map import table_derived

# rows x C elements of one tile's buffers, and pairs of one piece. CPU: cache-sized (a few MiB);
# CUDA: large, so that kernel launches do not dominate.
TILE_ELEMENTS = {"cpu": 1 << 19, "cuda": 1 << 22}
PIECE_PAIRS = {"cpu": 1 << 12, "cuda": 1 << 16}


def tile_rows_for(device: torch.device, channels: int) -> int:
    budget = TILE_ELEMENTS.get(torch.device(device).type, TILE_ELEMENTS["cuda"])
    return max(1, budget // max(1, channels))


class _Pairs(NamedTuple):
    """A table's occupied pairs besides the centre, in row order: src [P] source row, local [P]
    row within its tile, k [P] offset (int32); bounds [T + 1] (ints) where each tile's pairs begin;
    centre: the offset whose column is every row itself (None: no such column)."""
    src: torch.Tensor
    local: torch.Tensor
    k: torch.Tensor
    bounds: list
    centre: int

    def piece(self, part: slice):
        """(local, k, src) of the pairs in `part`, as int64 (index_add_ is several times slower
        with int32 indices)."""
        return self.local[part].long(), self.k[part].long(), self.src[part].long()


def tiled_pairs(nbr: torch.Tensor, tile: int) -> _Pairs:
    """The _Pairs of a neighbour table nbr [N, K] (-1 empty) for tiles of `tile` rows; cached with
    the table (lib.sparse.kernel_map.table_derived)."""
    return table_derived(nbr, ("tiled_pairs", tile), lambda t: _build_pairs(t, tile))


def _build_pairs(nbr: torch.Tensor, tile: int) -> _Pairs:
    n = nbr.shape[0]
    arange = torch.arange(n, device=nbr.device)
    centre = next((k for k in range(nbr.shape[1]) if torch.equal(nbr[:, k], arange)), None)
    valid = nbr.ge(0)
    if centre is not None:
        valid[:, centre] = False
    row, k = valid.nonzero(as_tuple=True)  # row-major: ordered by row, so tiles are contiguous
    edges = torch.arange(0, n + tile, tile, device=nbr.device).clamp_(max=n)
    # stored as int32 (they live as long as the table), widened piece by piece
    return _Pairs(nbr[row, k].int(), (row % tile).int(), k.int(), torch.searchsorted(row, edges).tolist(), centre)


class _Group(NamedTuple):
    """Elements read together: the centre group (pairs None; every element whose table has a
    centre column) or the elements of one table object (pairs: its _Pairs). ds: their indices;
    d_index: a slice over them where consecutive (a view of a), else ds; w: their weights, [Dm, H, cg]
    centre rows for the centre group, [Dm, K, C] tables otherwise (compute dtype); shared: the
    combined weights when a is shared by every row ([C] centre, [K, C] otherwise), else None;
    centre_ks: each element's centre offset (centre group; else None)."""
    pairs: _Pairs
    ds: list
    d_index: object
    w: torch.Tensor
    shared: torch.Tensor
    centre_ks: list


def _groups(tables, pairs, weights, a, heads, dtype):
    centre, by_table = [], {}
    for d, (table, p) in enumerate(zip(tables, pairs)):
        if p.centre is not None:
            centre.append((d, p.centre))
        if len(p.src):
            by_table.setdefault(id(table), (p, []))[1].append(d)
    groups = []
    centre_rows = [weights[d][k] for d, k in centre]
    for p, ds, w in ([(None, [d for d, _ in centre], torch.stack(centre_rows).view(len(centre), heads, -1))]
                     if centre else []) + [(p, ds, torch.stack([weights[d] for d in ds])) for p, ds in by_table.values()]:
        w = w.to(dtype)
        d_index = slice(ds[0], ds[-1] + 1) if ds == list(range(ds[0], ds[-1] + 1)) else ds
        shared = None
        if a.shape[0] == 1:  # one mixing weight per element and head for every row: combine once
            a_d = a[0, d_index].to(dtype)  # [Dm, H]
            if p is None:
                shared = (a_d.unsqueeze(-1) * w).sum(0).view(-1)
            else:
                shared = (a_d.repeat_interleave(w.shape[2] // heads, dim=1).unsqueeze(1) * w).sum(0)
        groups.append(_Group(p, ds, d_index, w, shared, [k for _, k in centre] if p is None else None))
    return groups


def _combined(group, a_rows, k, out, tmp, w_rows=None):
    """The pairs' combined weights sum_j a_rows[:, j, head(c)] * w[j][k, c]: [m, C] in out.
    a_rows [m, Dm, H] (None when a is shared); k [m] offsets (None for the centre group); w_rows:
    an [m, C] buffer that keeps the weight rows w[0][k] of a one-element group (backward reuses them)."""
    m = out.shape[0]
    if group.shared is not None:
        return group.shared if k is None else torch.index_select(group.shared, 0, k, out=out)
    if k is None:  # centre: [H, m, Dm] @ [H, Dm, cg] -> [m, H, cg]
        dm, heads, cg = group.w.shape
        torch.bmm(a_rows.permute(2, 0, 1), group.w.transpose(0, 1), out=out.view(m, heads, cg).transpose(0, 1))
        return out
    heads = a_rows.shape[2]
    if w_rows is not None and len(group.ds) == 1:
        rows = torch.index_select(group.w[0], 0, k, out=w_rows).view(m, heads, -1)
        torch.mul(rows, a_rows[:, 0].unsqueeze(-1), out=out.view(m, heads, -1))
        return out
    for j in range(len(group.ds)):
        target = out if j == 0 else tmp
        torch.index_select(group.w[j], 0, k, out=target).view(m, heads, -1).mul_(a_rows[:, j].unsqueeze(-1))
        if j:
            out.add_(tmp)
    return out


def _pieces(groups, ti, piece):
    """(group index, group, slice of its pairs or None for the centre) of tile ti, in pieces of at
    most `piece` pairs."""
    for gi, group in enumerate(groups):
        if group.pairs is None:
            yield gi, group, None
            continue
        s0, s1 = group.pairs.bounds[ti], group.pairs.bounds[ti + 1]
        for p0 in range(s0, s1, piece):
            yield gi, group, slice(p0, min(s1, p0 + piece))


class _Source:
    """The op's source features, piece by piece: v itself, or relu(batch_norm(v)) when a NormReLU
    is folded in (stats: its (mean, invstd)), in the compute dtype. Pieces live in reused buffers."""

    def __init__(self, v, norm, stats, size, dtype):
        self.v, self.dtype = v, dtype
        self.scale_shift = None if norm is None else norm_relu.affine(norm.weight, norm.bias, *stats)
        self.raw = torch.empty(size, v.shape[1], dtype=v.dtype, device=v.device)
        self.normed = torch.empty(size, v.shape[1], dtype=dtype, device=v.device) if norm is not None else None

    def _finish(self, raw, out):
        if self.scale_shift is None:
            return raw.to(self.dtype) if out is None else out.copy_(raw)
        scale, shift = self.scale_shift
        return torch.addcmul(shift, raw, scale, out=self.normed[:len(raw)] if out is None else out).relu_()

    def gather(self, src, out=None):
        """Rows src of the features [m, C] (a reused buffer: consume before the next call)."""
        return self._finish(torch.index_select(self.v, 0, src, out=self.raw[:src.numel()]), out)

    def rows(self, r0, r1, out=None):
        """Rows r0:r1 [r1 - r0, C] (read only, or written into out)."""
        return self._finish(self.v[r0:r1], out)


def _dtypes(v_dtype, a, out_weight, weights):
    """(compute dtype, output dtype): the promoted dtype of the float inputs, the compute dtype at
    least float32."""
    dtypes = [a.dtype, *(w.dtype for w in weights)] + ([out_weight.dtype] if out_weight is not None else [])
    out_dtype = functools.reduce(torch.promote_types, dtypes, v_dtype)
    return torch.promote_types(out_dtype, torch.float32), out_dtype


def _tile_rows(device, n, c):
    return max(1, min(n, tile_rows_for(device, c)))


def _setup(v, a, out_weight, weights, tables):
    """What forward and backward both start from on the tensor-op path (call with autocast off):
    (N, C, H, compute dtype, output dtype, tile rows, piece pairs, the groups, a and out_weight in
    the compute dtype)."""
    dtype, out_dtype = _dtypes(v.dtype, a, out_weight, weights)
    n, c, heads = tables[0].shape[0], v.shape[1], a.shape[2]
    tile = _tile_rows(v.device, n, c)
    piece = PIECE_PAIRS.get(v.device.type, PIECE_PAIRS["cuda"])
    groups = _groups(tables, [tiled_pairs(t, tile) for t in tables], weights, a, heads, dtype)
    w_out = None if out_weight is None else out_weight.to(dtype)
    return n, c, heads, dtype, out_dtype, tile, piece, groups, a.to(dtype), w_out


def _buffer_rows(groups, tile, piece, n):
    """Rows of the per-piece buffers: a whole tile, or the longest piece if that is longer."""
    longest = max((min(piece, b1 - b0) for g in groups if g.pairs is not None
                   for b0, b1 in zip(g.pairs.bounds, g.pairs.bounds[1:])), default=0)
    return max(min(tile, n), longest, 1)


def _rows_of(a_tile, group, local):
    """Mixing weights [m, Dm, H] of the group's elements at tile rows `local` (None: every row);
    None when a is shared by all rows (the group's combined weights hold it)."""
    if group.shared is not None:
        return None
    sel = a_tile[:, group.d_index]
    return sel if local is None else sel.index_select(0, local)


class _MixedDepthwise(torch.autograd.Function):
    """See the module docstring. Saves only its inputs (and a folded norm's [C] statistics)."""

    @staticmethod
    def forward(ctx, v, a, out_weight, norm_weight, norm_bias, norm, tables, *weights):
        dev = v.device
        dtype, out_dtype = _dtypes(v.dtype, a, out_weight, weights)
        ctx.native = mixing_native.active(dev, dtype)
        if ctx.native:
            with torch.autocast(device_type=dev.type, enabled=False):
                out, stats = mixing_native.forward(v, a.to(dtype), weights, tables,
                                                   None if out_weight is None else out_weight.to(dtype), norm,
                                                   dtype, a.shape[2], _tile_rows(dev, tables[0].shape[0], v.shape[1]))
        else:
            out, stats = _MixedDepthwise._forward(v, a, out_weight, norm, tables, weights)
        # v is read again in backward only for the gradients of a, the weights, out_weight or a norm:
        # not when only v itself needs one (a choice logit's aggregation with fixed weights)
        needs = ctx.needs_input_grad
        keep_v = norm is not None or needs[1] or needs[2] or any(needs[7:])
        ctx.save_for_backward(v if keep_v else None, a, out_weight, norm_weight, norm_bias,
                              *(stats or (None, None)), *tables, *weights)
        ctx.n_tables, ctx.norm, ctx.v_meta = len(tables), norm, (v.shape, v.dtype)
        return out.to(out_dtype)

    @staticmethod
    def _forward(v, a, out_weight, norm, tables, weights):
        """The tensor-op forward: (out in the compute dtype, the norm's statistics)."""
        dev = v.device
        with torch.autocast(device_type=dev.type, enabled=False):
            n, c, heads, dtype, _, tile, piece, groups, a_c, w_out = _setup(v, a, out_weight, weights, tables)
            stats = None if norm is None else norm_relu.statistics(v, norm, dtype, tile)
            size = _buffer_rows(groups, tile, piece, n)
            source = _Source(v, norm, stats, size, dtype)
            weff_buf, tmp = (torch.empty(size, c, dtype=dtype, device=dev) for _ in range(2))
            out = torch.empty(n, c if w_out is None else w_out.shape[0], dtype=dtype, device=dev)
            acc_buf = torch.empty(tile, c, dtype=dtype, device=dev) if w_out is not None else None
            has_centre = bool(groups) and groups[0].pairs is None
            for ti, r0 in enumerate(range(0, n, tile)):
                r1 = min(n, r0 + tile)
                acc = out[r0:r1] if w_out is None else acc_buf[:r1 - r0]
                a_tile = a_c if a.shape[0] == 1 else a_c[r0:r1]
                if not has_centre:
                    acc.zero_()
                for _, group, part in _pieces(groups, ti, piece):
                    if part is None:  # the centre (the first group): the tile's own rows start the accumulator
                        x = source.rows(r0, r1, out=acc)
                        x.mul_(_combined(group, _rows_of(a_tile, group, None), None, weff_buf[:r1 - r0], tmp))
                        continue
                    local, k, src = group.pairs.piece(part)
                    x = source.gather(src)
                    x.mul_(_combined(group, _rows_of(a_tile, group, local), k, weff_buf[:len(k)], tmp[:len(k)]))
                    acc.index_add_(0, local, x)
                if w_out is not None:
                    torch.mm(acc, w_out.t(), out=out[r0:r1])
        return out, stats

    @staticmethod
    def backward(ctx, grad_out):
        v, a, out_weight, norm_weight, norm_bias, mean, invstd, *rest = ctx.saved_tensors
        tables, weights = rest[:ctx.n_tables], rest[ctx.n_tables:]
        need_v, need_a, need_out, need_nw, need_nb = ctx.needs_input_grad[:5]
        need_w = ctx.needs_input_grad[7:]
        norm = ctx.norm
        need_v = need_v or (norm is not None and (need_nw or need_nb))
        v_shape, v_dtype = ctx.v_meta
        v_kept = v
        if v is None:  # not kept (see forward): a stand-in that gives the layout
            v = torch.empty(0, v_shape[1], dtype=v_dtype, device=grad_out.device)
        dev = v.device
        if ctx.native:
            with torch.autocast(device_type=dev.type, enabled=False):
                dtype = _dtypes(v_dtype, a, out_weight, weights)[0]
                grad_v, grad_a, grad_w, grad_w_out, grad_nw, grad_nb = mixing_native.backward(
                    grad_out, v_kept, v_shape, a.to(dtype), weights, tables,
                    None if out_weight is None else out_weight.to(dtype), norm,
                    None if mean is None else (mean, invstd), (need_v, need_a, need_out, need_w), dtype,
                    a.shape[2], _tile_rows(dev, tables[0].shape[0], v_shape[1]))
        else:
            grad_v, grad_a, grad_w, grad_w_out, grad_nw, grad_nb = _MixedDepthwise._backward(
                grad_out, v, v_shape, a, out_weight, norm, mean, invstd, tables, weights,
                (need_v, need_a, need_out, need_w))
        return (None if grad_v is None else grad_v.to(v_dtype),
                None if grad_a is None else grad_a.to(a.dtype),
                None if grad_w_out is None else grad_w_out.to(out_weight.dtype),
                None if grad_nw is None or norm_weight is None else grad_nw.to(norm_weight.dtype),
                None if grad_nb is None or norm_bias is None else grad_nb.to(norm_bias.dtype),
                None, None,
                *(None if gw is None else gw.to(w.dtype) for gw, w in zip(grad_w, weights)))

    @staticmethod
    def _backward(grad_out, v, v_shape, a, out_weight, norm, mean, invstd, tables, weights, needs):
        """The tensor-op backward: (grad_v, grad_a, grad_w list, grad_out_weight, the norm's weight
        and bias grads) in the compute dtype, None where not needed."""
        need_v, need_a, need_out, need_w = needs
        use_x = need_a or need_out or any(need_w)  # the loop reads the source features
        dev = v.device
        with torch.autocast(device_type=dev.type, enabled=False):
            n, c, heads, dtype, _, tile, piece, groups, a_c, w_out = _setup(v, a, out_weight, weights, tables)
            grad_out = grad_out.to(dtype)
            grad_v = torch.zeros(v_shape, dtype=dtype, device=dev) if need_v else None
            grad_rows = torch.zeros(n, len(tables), heads, dtype=dtype, device=dev) if need_a else None
            # per group: sum over pairs of x * grad_y by offset ([Dm, H, cg] centre, [K, C] else),
            # turned into the weights' (and a shared a's) gradients at the end
            grad_w = [torch.zeros(w.shape, dtype=dtype, device=dev) if need else None
                      for w, need in zip(weights, need_w)]
            grad_w_out = torch.zeros(out_weight.shape, dtype=dtype, device=dev) if need_out else None
            size = _buffer_rows(groups, tile, piece, n)
            source = _Source(v, norm, None if norm is None else (mean, invstd), size, dtype) if use_x else None
            ones = torch.ones(c // heads, dtype=dtype, device=dev)  # sums over a head's channels, by mv
            gy_buf, y_buf = (torch.empty(tile, c, dtype=dtype, device=dev) for _ in range(2))
            gyr_buf, weff_buf, term_buf, tmp, w_rows_buf = (torch.empty(size, c, dtype=dtype, device=dev)
                                                            for _ in range(5))
            shared_sums = [torch.zeros_like(g.shared) if g.shared is not None else None for g in groups]
            for ti, r0 in enumerate(range(0, n, tile)):
                r1 = min(n, r0 + tile)
                rows = r1 - r0
                gy = grad_out[r0:r1] if w_out is None else torch.mm(grad_out[r0:r1], w_out, out=gy_buf[:rows])
                y = y_buf[:rows].zero_() if need_out else None  # the tile of y, for out_weight's gradient
                a_tile = a_c if a.shape[0] == 1 else a_c[r0:r1]
                grad_tile = None if grad_rows is None else grad_rows[r0:r1]
                for gi, group, part in _pieces(groups, ti, piece):
                    if part is None:
                        local = k = src = None
                        x = source.rows(r0, r1) if use_x else None
                        gyr = gy
                    else:
                        local, k, src = group.pairs.piece(part)
                        x = source.gather(src) if use_x else None
                        gyr = torch.index_select(gy, 0, local, out=gyr_buf[:len(src)])
                    m = gyr.shape[0]
                    a_rows = _rows_of(a_tile, group, local)
                    single = k is not None and a_rows is not None and len(group.ds) == 1
                    w_rows = w_rows_buf[:m] if single else None  # w[k] per pair, kept for a's gradient
                    weff = _combined(group, a_rows, k, weff_buf[:m], tmp[:m], w_rows)
                    term = term_buf[:m]
                    if y is not None:
                        torch.mul(x, weff, out=term)
                        y.add_(term) if local is None else y.index_add_(0, local, term)
                    if use_x:
                        prod = torch.mul(x, gyr, out=term)  # x * grad_y per pair
                        _weight_and_mix_grads(group, prod, a_rows, k, local, grad_w, grad_tile, shared_sums[gi],
                                              tmp[:m], ones, w_rows)
                    if grad_v is not None:
                        gv = torch.mul(gyr, weff, out=term)
                        grad_v[r0:r1].add_(gv) if src is None else grad_v.index_add_(0, src, gv)
                if need_out:
                    grad_w_out.addmm_(grad_out[r0:r1].t(), y)
            for group, sums in zip(groups, shared_sums):
                if sums is not None and use_x:
                    _shared_grads(group, sums, a_c, grad_w, grad_rows, heads)
            grad_a = grad_nw = grad_nb = None
            if need_a:
                grad_a = grad_rows.sum(0, keepdim=True) if a.shape[0] == 1 else grad_rows
            if norm is not None and grad_v is not None:  # activation's gradient -> the BN input's
                grad_v, grad_nw, grad_nb = norm_relu.backward_(grad_v, v, norm, mean, invstd, tile, gy_buf)
        return grad_v, grad_a, grad_w, grad_w_out, grad_nw, grad_nb


def _weight_and_mix_grads(group, prod, a_rows, k, local, grad_w, grad_tile, shared_sum, tmp, ones, w_rows=None):
    """Add one piece's share to the weights' gradients (sum over pairs of prod * a, by offset) and
    to the mixing weights' of the tile's rows (sum over a head's channels of prod * w). prod [m, C]
    = x[src] * grad_y[row]; a_rows [m, Dm, H] (None: a shared, then only shared_sum, the sum of
    prod by offset, is kept); k [m] offsets, local [m] tile rows (None for the centre group);
    tmp: an [m, C] scratch buffer; ones: [C / H] ones; w_rows: the weight rows w[0][k] when the
    caller has them (a one-element group)."""
    m = prod.shape[0]
    if shared_sum is not None:
        shared_sum.add_(prod.sum(0)) if k is None else shared_sum.index_add_(0, k, prod)
        return
    heads = a_rows.shape[2]
    prod3, tmp3 = prod.view(m, heads, -1), tmp.view(m, heads, -1)
    for j, d in enumerate(group.ds):
        if grad_w[d] is not None:
            torch.mul(prod3, a_rows[:, j].unsqueeze(-1), out=tmp3)
            if k is None:
                grad_w[d][group.centre_ks[j]] += tmp.sum(0)
            else:
                grad_w[d].index_add_(0, k, tmp)
        if grad_tile is not None:
            if k is None:
                rows = group.w[j].reshape(1, -1)
            else:
                rows = w_rows if w_rows is not None else torch.index_select(group.w[j], 0, k, out=tmp)
            ga = torch.mul(prod, rows, out=tmp).view(m * heads, -1).mv(ones).view(m, heads)
            grad_tile[:, d].add_(ga) if local is None else grad_tile[:, d].index_add_(0, local, ga)


def _shared_grads(group, sums, a, grad_w, grad_rows, heads):
    """Gradients of a shared a ([1, D, H]) group from sums ([C] centre, [K, C] otherwise) of
    x * grad_y: w_j's is sums * a[0, j, head], a's the sum over a head's channels of sums * w_j."""
    cg = sums.shape[-1] // heads
    for j, d in enumerate(group.ds):
        if grad_w[d] is not None:
            scaled = sums * a[0, d].repeat_interleave(cg)
            if group.pairs is None:
                grad_w[d][group.centre_ks[j]] += scaled
            else:
                grad_w[d] += scaled
        if grad_rows is not None:
            grad_rows[0, d] += (sums * group.w[j].reshape(sums.shape)).view(-1, heads, cg).sum((0, 2))


def mixed_depthwise(v: torch.Tensor, a: torch.Tensor, weights, tables, out_weight: torch.Tensor = None,
                    norm: "norm_relu.NormReLU" = None) -> torch.Tensor:
    """Depthwise neighbourhood sums of D elements mixed per voxel and head, optionally projected.

    v [M, C] source features; a [N or 1, D, H] mixing weights (H divides C; head(c) = c // (C // H));
    weights: D depthwise kernels w_d [K_d, C]; tables: D int64 neighbour tables [N, K_d] (-1 empty);
    out_weight [P, C] or None; norm: a lib.sparse.norm_relu.NormReLU (NormReLU.of(batchnorm)) or None,
    in which case the source features are relu(batch_norm(v)) (v the BN input; running statistics
    updated in training as the module would):
        y[i, c] = sum_d a[i, d, head(c)] * sum_k w_d[k, c] * x[tables[d][i, k], c],  x = v or relu(bn(v))
        returns y @ out_weight.T [N, P], or y [N, C] without out_weight.
    Gradients reach v, a, the weights, out_weight and the norm's weight and bias; nothing but the
    inputs (and the norm's [C] statistics) is kept for backward.
    """
    weights, tables = list(weights), list(tables)
    if not tables or len(weights) != len(tables):
        raise ValueError(f"mixed_depthwise: needs one weight per table, got {len(weights)} weights, {len(tables)} tables")
    if v.ndim != 2:
        raise ValueError(f"mixed_depthwise: v must be [M, C], got shape {tuple(v.shape)}")
    n, c = tables[0].shape[0], v.shape[1]
    if a.ndim != 3 or a.shape[0] not in (1, n) or a.shape[1] != len(tables) or c % a.shape[2]:
        raise ValueError(f"mixed_depthwise: a must be [N or 1, D, H] = ({n}, {len(tables)}, H) with H dividing "
                         f"C={c}, got {tuple(a.shape)}")
    for w, t in zip(weights, tables):
        if t.ndim != 2 or t.dtype != torch.int64 or t.shape[0] != n:
            raise ValueError(f"mixed_depthwise: tables must be int64 [N={n}, K], got {t.dtype} {tuple(t.shape)}")
        if tuple(w.shape) != (t.shape[1], c):
            raise ValueError(f"mixed_depthwise: a weight must be [K, C] = ({t.shape[1]}, {c}), got {tuple(w.shape)}")
    if out_weight is not None and (out_weight.ndim != 2 or out_weight.shape[1] != c):
        raise ValueError(f"mixed_depthwise: out_weight must be [P, C={c}], got {tuple(out_weight.shape)}")
    return _MixedDepthwise.apply(v, a, out_weight, None if norm is None else norm.weight,
                                 None if norm is None else norm.bias, norm, tuple(tables), *weights)
