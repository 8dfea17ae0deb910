"""Mixed depthwise neighbourhood sums, worked through in tiles of output rows.

    y[i, c]   = sum_d a[i, d, head(c)] * sum_k w_d[k, c] * v[tables[d][i, k], c]
    out[i, p] = sum_c y[i, c] * out_weight[p, c]          (optional fused projection; else out = y)

The codebook attention of CodedVTR and its discrete variant are this op (a = the mixing weights,
w_d = the codebook), and so is every head-weighted depthwise sum (D = 1).

Order of work: tiles of TILE rows of the output; inside a tile, offset by offset, the occupied
pairs whose output row falls in the tile (each table's pair lists are cut at tile bounds once and
cached with the table). Each piece is gathered from v, scaled by its combined weight
sum_d a[i, d, head(c)] w_d[k, c] and added into a [TILE, C] accumulator, so:
  - no [N, K, C] tensor and no element's [N, C] sum exists, and y itself is never whole when the
    projection is fused: the tile of y is projected as soon as it is complete;
  - offsets shared by several elements (the centre, which every support holds; every offset when
    two elements use one table object, as the discrete block's patterns on one cube do) are
    gathered once for all of them;
  - backward walks the same tiles, rebuilding the tile of y where the projection's weight gradient
    needs it, so nothing but the inputs is saved (v, a, the weights, the tables).
Sums are deterministic on every device: an offset's rows are unique, so an index_add_ of one
piece never adds two values into one row.

Precision: computes with autocast off in the promoted dtype of the float inputs, at least float32;
the output has the inputs' promoted dtype, each gradient the dtype of its input.
"""
import functools
from typing import NamedTuple

import torch
from torch.utils.weak import WeakTensorKeyDictionary

from . import norm_relu

# rows x C elements of one tile's buffers. CPU: cache-sized (a few MiB); CUDA: large, so that
# kernel launches do not dominate.
TILE_ELEMENTS = {"cpu": 1 << 19, "cuda": 1 << 24}


def tile_rows_for(device: torch.device, channels: int) -> int:
    budget = TILE_ELEMENTS.get(torch.device(device).type, TILE_ELEMENTS["cuda"])
    return max(1, budget // max(1, channels))


class _Column(NamedTuple):
    """One offset k of a table: identity (every row reads itself) or its occupied pairs, rows
    ascending: src [m] source rows, local [m] output row within its tile, bounds [T + 1] (list of
    ints) where the pairs of each tile begin."""
    k: int
    identity: bool
    src: torch.Tensor
    local: torch.Tensor
    bounds: list


_TILED = WeakTensorKeyDictionary()  # table -> (version, {tile rows: [_Column]})


def tiled_columns(nbr: torch.Tensor, tile: int) -> list:
    """The _Columns of a neighbour table nbr [N, K] (-1 empty) for tiles of `tile` rows; cached per
    table object and rebuilt when the table was modified in place (its version counter moved)."""
    version, per_tile = _TILED.get(nbr, (None, None))
    if version != nbr._version:
        per_tile = {}
        _TILED[nbr] = (nbr._version, per_tile)
    if tile not in per_tile:
        n = nbr.shape[0]
        arange = torch.arange(n, device=nbr.device)
        edges = torch.arange(0, n + tile, tile, device=nbr.device).clamp_(max=n)
        columns = []
        for k in range(nbr.shape[1]):
            col = nbr[:, k]
            if torch.equal(col, arange):
                columns.append(_Column(k, True, None, None, None))
                continue
            rows = col.ge(0).nonzero().squeeze(1)
            if rows.numel():
                bounds = torch.searchsorted(rows, edges).tolist()
                columns.append(_Column(k, False, col.index_select(0, rows), rows % tile, bounds))
        per_tile[tile] = columns
    return per_tile[tile]


class _Group(NamedTuple):
    """Pairs shared by one or more elements: column (None for the identity), members [(d, k)],
    their d's, d_index (a slice where they are consecutive, as ds otherwise), all_d (the members
    are elements 0..D-1 in order), w [Dm, H, cg] their weight rows
    (compute dtype), shared [C] the combined weight when a is shared by all rows (else None)."""
    column: _Column
    members: list
    ds: list
    d_index: object
    all_d: bool
    w: torch.Tensor
    shared: torch.Tensor


def _groups(tables, columns, weights, a, heads, dtype):
    identity, others = [], {}
    for d, (table, cols) in enumerate(zip(tables, columns)):
        for col in cols:
            if col.identity:
                identity.append((None, d, col.k))
            else:
                others.setdefault((id(table), col.k), []).append((col, d, col.k))
    groups = []
    for entries in ([identity] if identity else []) + list(others.values()):
        ds = [d for _, d, _ in entries]
        w = torch.stack([weights[d][k] for _, d, k in entries]).to(dtype)
        w = w.view(len(entries), heads, -1)
        shared = None
        if a.shape[0] == 1:  # one mixing weight per element and head for every row
            shared = (a[0, ds].to(dtype).unsqueeze(-1) * w).sum(0).view(-1)
        # a slice keeps a[:, d_index] a view (advanced indexing would copy, piece by piece)
        d_index = slice(ds[0], ds[-1] + 1) if ds == list(range(ds[0], ds[-1] + 1)) else ds
        groups.append(_Group(entries[0][0], [(d, k) for _, d, k in entries], ds, d_index,
                             ds == list(range(len(tables))), w, shared))
    return groups


def _rows_of(a_tile, group, local):
    """Mixing weights [m, Dm, H] of the group's members at tile rows `local` (None: every row);
    None when a is shared by all rows (the group's combined weight holds it)."""
    if group.shared is not None:
        return None
    sel = a_tile if group.all_d else a_tile[:, group.d_index]
    return sel if local is None else sel.index_select(0, local)


def _scale_(t, group, a_rows):
    """t [m, C] *= the pair's combined weight sum_j a_rows[:, j, head] * w[j] (in place)."""
    m = t.shape[0]
    if group.shared is not None:
        return t.mul_(group.shared)
    t3 = t.view(m, group.w.shape[1], -1)
    if len(group.members) == 1:
        t3.mul_(group.w[0]).mul_(a_rows[:, 0].unsqueeze(-1))
    else:  # [H, m, Dm] @ [H, Dm, cg] -> per-pair combined weights [m, H, cg]
        t3.mul_(torch.bmm(a_rows.permute(2, 0, 1), group.w.transpose(0, 1)).transpose(0, 1))
    return t


def _combined(group, a_rows, out):
    """The pairs' combined weights sum_j a_rows[:, j, head(c)] * w[j, c]: [m, C] written into out
    ([m, C] buffer), or the group's shared [C] row when a is shared by all rows."""
    if group.shared is not None:
        return group.shared
    m, (dm, heads, cg) = len(a_rows), group.w.shape
    if dm == 1:
        torch.mul(a_rows[:, 0].unsqueeze(-1), group.w[0], out=out.view(m, heads, cg))
    else:
        torch.bmm(a_rows.permute(2, 0, 1), group.w.transpose(0, 1), out=out.view(m, heads, cg).transpose(0, 1))
    return out


def _pieces(groups, ti):
    """(group, src, local) of tile ti's pairs, group by group (src/local None: the identity)."""
    for group in groups:
        col = group.column
        if col is None:
            yield group, None, None
            continue
        s0, s1 = col.bounds[ti], col.bounds[ti + 1]
        if s1 > s0:
            yield group, col.src[s0:s1], col.local[s0:s1]


class _Source:
    """The op's source features, piece by piece: v itself, or relu(batch_norm(v)) when a NormReLU
    is folded in (stats: its (mean, invstd)), in the compute dtype. Pieces live in reused buffers."""

    def __init__(self, v, norm, stats, tile, dtype):
        self.v, self.dtype = v, dtype
        self.scale_shift = None if norm is None else norm_relu.affine(norm.weight, norm.bias, *stats)
        self.raw = torch.empty(tile, v.shape[1], dtype=v.dtype, device=v.device)
        self.normed = torch.empty(tile, v.shape[1], dtype=dtype, device=v.device) if norm is not None else None

    def _finish(self, raw, out):
        if self.scale_shift is None:
            return raw.to(self.dtype) if out is None else out.copy_(raw)
        scale, shift = self.scale_shift
        return torch.mul(raw, scale, out=self.normed[:len(raw)] if out is None else out).add_(shift).relu_()

    def gather(self, src, out=None):
        """Rows src of the features [m, C] (a reused buffer: consume before the next call)."""
        return self._finish(torch.index_select(self.v, 0, src, out=self.raw[:src.numel()]), out)

    def rows(self, r0, r1, out=None):
        """Rows r0:r1 [r1 - r0, C] (read only, or written into out)."""
        return self._finish(self.v[r0:r1], out)


def _tiles(n, tile):
    return enumerate(range(0, n, tile))


class _MixedDepthwise(torch.autograd.Function):
    """See the module docstring. Saves only its inputs."""

    @staticmethod
    def forward(ctx, v, a, out_weight, norm_weight, norm_bias, norm, tables, *weights):
        n = tables[0].shape[0]
        c, heads = v.shape[1], a.shape[2]
        dtype = functools.reduce(torch.promote_types, [t.dtype for t in (v, a, *weights)], torch.float32)
        if out_weight is not None:
            dtype = torch.promote_types(dtype, out_weight.dtype)
        out_dtype = functools.reduce(torch.promote_types, [t.dtype for t in (a, *weights)], v.dtype)
        if out_weight is not None:
            out_dtype = torch.promote_types(out_dtype, out_weight.dtype)
        tile = min(n, tile_rows_for(v.device, c)) or 1
        with torch.autocast(device_type=v.device.type, enabled=False):
            columns = [tiled_columns(t, tile) for t in tables]
            groups = _groups(tables, columns, weights, a, heads, dtype)
            a_c = a.to(dtype)
            w_out = None if out_weight is None else out_weight.to(dtype)
            stats = None if norm is None else norm_relu.statistics(v, norm, dtype)
            source = _Source(v, norm, stats, tile, dtype)
            out = torch.empty(n, c if w_out is None else w_out.shape[0], dtype=dtype, device=v.device)
            acc_buf = torch.empty(tile, c, dtype=dtype, device=v.device) if w_out is not None else None
            for ti, r0 in _tiles(n, tile):
                r1 = min(n, r0 + tile)
                acc = out[r0:r1] if w_out is None else acc_buf[:r1 - r0]
                a_tile = a_c if a.shape[0] == 1 else a_c[r0:r1]
                started = False
                for group, src, local in _pieces(groups, ti):
                    if src is None:  # the identity: the tile's own rows start the accumulator
                        _scale_(source.rows(r0, r1, out=acc), group, _rows_of(a_tile, group, None))
                        started = True
                        continue
                    if not started:
                        acc.zero_()
                        started = True
                    acc.index_add_(0, local, _scale_(source.gather(src), group, _rows_of(a_tile, group, local)))
                if not started:
                    acc.zero_()
                if w_out is not None:
                    torch.mm(acc, w_out.t(), out=out[r0:r1])
        ctx.save_for_backward(v, a, out_weight, norm_weight, norm_bias, *(stats or (None, None)), *tables, *weights)
        ctx.n_tables, ctx.tile, ctx.dtype, ctx.norm = len(tables), tile, dtype, norm
        return out.to(out_dtype)

    @staticmethod
    def backward(ctx, grad_out):
        v, a, out_weight, norm_weight, norm_bias, mean, invstd, *rest = ctx.saved_tensors
        tables, weights = rest[:ctx.n_tables], rest[ctx.n_tables:]
        need_v, need_a, need_out, need_nw, need_nb = ctx.needs_input_grad[:5]
        need_w = ctx.needs_input_grad[7:]
        norm = ctx.norm
        need_v = need_v or ((need_nw or need_nb) and norm is not None)
        n, tile, dtype = tables[0].shape[0], ctx.tile, ctx.dtype
        c, heads = v.shape[1], a.shape[2]
        cg = c // heads
        dev = v.device
        with torch.autocast(device_type=dev.type, enabled=False):
            columns = [tiled_columns(t, tile) for t in tables]
            groups = _groups(tables, columns, weights, a, heads, dtype)
            a_c = a.to(dtype)
            w_out = None if out_weight is None else out_weight.to(dtype)
            grad_out = grad_out.to(dtype)
            grad_v = torch.zeros(v.shape, dtype=dtype, device=dev) if need_v else None
            grad_rows = torch.zeros(n, len(tables), heads, dtype=dtype, device=dev) if need_a else None
            grad_w = [torch.zeros(w.shape, dtype=dtype, device=dev) if need else None
                      for w, need in zip(weights, need_w)]
            grad_w_out = torch.zeros(out_weight.shape, dtype=dtype, device=dev) if need_out else None
            # tile buffers: grad of y, y, per-pair term, grad of y at the pairs' rows, combined weights, scratch
            bufs = [torch.empty(tile, c, dtype=dtype, device=dev) for _ in range(6)]
            source = _Source(v, norm, None if norm is None else (mean, invstd), tile, dtype)
            for ti, r0 in _tiles(n, tile):
                r1 = min(n, r0 + tile)
                rows = r1 - r0
                gy = grad_out[r0:r1] if w_out is None else torch.mm(grad_out[r0:r1], w_out, out=bufs[0][:rows])
                y = bufs[1][:rows].zero_() if need_out else None  # the tile of y, for out_weight's gradient
                a_tile = a_c if a.shape[0] == 1 else a_c[r0:r1]
                grad_tile = None if grad_rows is None else grad_rows[r0:r1]
                for group, src, local in _pieces(groups, ti):
                    a_rows = _rows_of(a_tile, group, local)
                    if src is None:
                        g, gyr = source.rows(r0, r1), gy
                    else:
                        g = source.gather(src)
                        gyr = torch.index_select(gy, 0, local, out=bufs[3][:src.numel()])
                    m = g.shape[0]
                    term = bufs[2][:m]
                    weff = _combined(group, a_rows, bufs[4][:m])
                    if y is not None:
                        torch.mul(g, weff, out=term)
                        y.add_(term) if src is None else y.index_add_(0, local, term)
                    if grad_tile is not None or any(grad_w[d] is not None for d in group.ds):
                        p = torch.mul(g, gyr, out=term)
                        _weight_and_mix_grads(group, p, a_rows, a_c, grad_w, grad_tile, local, bufs[5][:m])
                    if need_v:
                        gv = torch.mul(gyr, weff, out=term)
                        grad_v[r0:r1].add_(gv) if src is None else grad_v.index_add_(0, src, gv)
                if need_out:
                    grad_w_out.addmm_(grad_out[r0:r1].t(), y)
            grad_a = grad_nw = grad_nb = None
            if need_a:
                grad_a = grad_rows.sum(0, keepdim=True) if a.shape[0] == 1 else grad_rows
            if norm is not None and grad_v is not None:  # activation's gradient -> the BN input's
                grad_v, grad_nw, grad_nb = norm_relu.backward_(grad_v, v, norm, norm_weight, mean, invstd,
                                                               tile, bufs[0])
        return (None if grad_v is None else grad_v.to(v.dtype),
                None if grad_a is None else grad_a.to(a.dtype),
                None if grad_w_out is None else grad_w_out.to(out_weight.dtype),
                None if grad_nw is None or norm_weight is None else grad_nw.to(norm_weight.dtype),
                None if grad_nb is None or norm_bias is None else grad_nb.to(norm_bias.dtype),
                None, None,
                *(None if gw is None else gw.to(w.dtype) for gw, w in zip(grad_w, weights)))


def _weight_and_mix_grads(group, p, a_rows, a, grad_w, grad_tile, local, tmp):
    """Add one piece's share to the weights' gradients (sum over pairs of p * a) and to the mixing
    weights' of the tile's rows (sum over a head's channels of p * w). Elementwise products and
    sums (on CPU several times faster than the equivalent skinny matrix products).
    p [m, C] = v[src] * grad_y[row] per pair; a_rows [m, Dm, H], None when a is shared [1, D, H];
    local: the pairs' rows in the tile (None: rows 0..m-1); tmp: an [m, C] buffer."""
    m, (dm, heads, cg) = len(p), group.w.shape
    p3, tmp3 = p.view(m, heads, cg), tmp.view(m, heads, cg)
    total = p.sum(0).view(heads, cg) if a_rows is None else None
    for j, (d, k) in enumerate(group.members):
        if grad_w[d] is None:
            continue
        if a_rows is None:
            grad_w[d][k] += (total * a[0, d].unsqueeze(-1)).view(-1)
        else:
            grad_w[d][k] += torch.mul(p3, a_rows[:, j].unsqueeze(-1), out=tmp3).sum(0).view(-1)
    if grad_tile is None:
        return
    ones = p.new_ones(cg)
    for j, d in enumerate(group.ds):
        ga = torch.mul(p3, group.w[j], out=tmp3).view(m * heads, cg).mv(ones).view(m, heads)
        grad_tile[:m, d].add_(ga) if local is None else grad_tile[:, d].index_add_(0, local, ga)


def mixed_depthwise(v: torch.Tensor, a: torch.Tensor, weights, tables, out_weight: torch.Tensor = None,
                    norm: "norm_relu.NormReLU" = None) -> torch.Tensor:
    """Depthwise neighbourhood sums of D elements mixed per voxel and head, optionally projected.

    v [M, C] source features; a [N or 1, D, H] mixing weights (H divides C; head(c) = c // (C // H));
    weights: D depthwise kernels w_d [K_d, C]; tables: D int64 neighbour tables [N, K_d] (-1 empty);
    out_weight [P, C] or None; norm: a lib.sparse.norm_relu.NormReLU (NormReLU.of(batchnorm)) or None,
    in which case the source features are relu(batch_norm(v)) (v the BN input; running statistics
    updated in training as the module would):
        y[i, c] = sum_d a[i, d, head(c)] * sum_k w_d[k, c] * v[tables[d][i, k], c]
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
