"""Kernel maps: for each kernel offset, the (input row, output row) pairs it connects.

Offsets are enumerated in the canonical order (x slowest, z fastest, each in -r..r, or 0..1 for
the k2s2 down/up convolutions), matching the weight layout [K, Cin, Cout]. Submanifold maps of a
general KernelRegion (lib.sparse.regions) follow the region's own offset order.
"""

import itertools
import warnings
from typing import NamedTuple

import torch
from torch.utils.weak import WeakTensorKeyDictionary

# torch warns once that CSR support is "beta"; the scatter matrices below use only its stable core
warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta", category=UserWarning)

from .coords import CoordSet, KeyCoder
from .regions import KernelRegion


def kernel_offsets(kernel_size: int):
    """Canonical offsets of a cubic kernel, in kernel-step units: list of K (dx, dy, dz) tuples."""
    if kernel_size == 2:
        rng = range(0, 2)
    elif kernel_size >= 1 and kernel_size % 2 == 1:
        r = kernel_size // 2
        rng = range(-r, r + 1)
    else:
        raise ValueError(f"kernel_size must be odd (submanifold) or 2 (down/up), got {kernel_size}")
    return list(itertools.product(rng, rng, rng))


class PairChunk(NamedTuple):
    """The pairs of a KernelMap whose output row lies in rows [r0, r1), grouped by offset.

    in_idx, out_idx: int64 [m] map positions of the pairs, offset by offset; segments: (k, start,
    end) pair ranges of offset k; scatter: CSR [r1 - r0, m] with a one at (out_idx[p] - r0, p).
    """
    r0: int
    r1: int
    in_idx: torch.Tensor
    out_idx: torch.Tensor
    segments: list
    scatter: torch.Tensor


class KernelMap:
    """Pairs per offset: out[out_idx[k]] += in[in_idx[k]] @ W[k].

    Indices are positions in sorted-key order of the input / output coordinate sets (equal to
    rows when the rows are sorted); in_order / out_order map a sorted position to its row
    (None when rows are sorted). in_idx, out_idx: lists of K int64 tensors, None at the identity
    centre of a submanifold map (there out += in @ W[centre] is one plain GEMM).
    Scatter matrices (CSR) for each index list are built on first use and cached here.
    """

    def __init__(self, in_idx, out_idx, n_in: int, n_out: int, center=None, in_order=None, out_order=None,
                 in_inverse=None, out_inverse=None, _csr=None):
        self.in_idx = in_idx
        self.out_idx = out_idx
        self.n_in = n_in
        self.n_out = n_out
        self.center = center
        self.in_order, self.out_order = in_order, out_order
        self.in_inverse, self.out_inverse = in_inverse, out_inverse
        self._csr = {} if _csr is None else _csr
        self._table = None

    @property
    def volume(self) -> int:
        return len(self.in_idx)

    def neighbor_table(self, device) -> torch.Tensor:
        """[n_out, K] int64 in row order: input row read by each output row at offset k, -1 where
        empty (the centre column, when there is one, is the row itself). Built once, cached."""
        if self._table is None:
            n = self.n_out
            table = torch.full((n, self.volume), -1, dtype=torch.int64, device=device)
            if self.center is not None:
                table[:, self.center] = torch.arange(n, device=device)
            for k in range(self.volume):
                if k == self.center:
                    continue
                out, inp = self.out_idx[k], self.in_idx[k]
                if self.out_order is not None:  # the map holds sorted positions; the table holds rows
                    out = self.out_order[out]
                if self.in_order is not None:
                    inp = self.in_order[inp]
                table[out, k] = inp
            self._table = table
        return self._table

    def transposed(self) -> "KernelMap":
        """The same pairs read backwards: the map of the transposed convolution."""
        return KernelMap(self.out_idx, self.in_idx, self.n_out, self.n_in, self.center, self.out_order,
                         self.in_order, self.out_inverse, self.in_inverse, self._csr)

    def chunks(self, budget: int, dtype: torch.dtype) -> list:
        """The non-centre pairs cut by output row into PairChunks of about `budget` pairs (cached).

        A chunk's working buffers stay small (cache-resident) and its scatter-add is one sparse
        product, so every output row is written once per chunk instead of once per offset.
        """
        # a map and its transposed() share this cache and the two index lists, in swapped roles
        key = ("chunks", id(self.in_idx), id(self.out_idx), budget, dtype)
        if key not in self._csr:
            self._csr[key] = _cut_chunks(self, budget, dtype)
        return self._csr[key]

    def scatter_matrix(self, idx: torch.Tensor, n_rows: int, dtype: torch.dtype) -> torch.Tensor:
        """Sparse CSR [n_rows, len(idx)] with a one at (idx[p], p): `dst.addmm_(S, src)` adds row p
        of src into row idx[p] of dst. On CPU this is several times faster than index_add_, and it
        runs on all threads."""
        key = (idx.data_ptr(), idx.numel(), n_rows, dtype)
        if key not in self._csr:
            self._csr[key] = _ones_csr(idx, n_rows, dtype)
        return self._csr[key]


def _ones_csr(idx: torch.Tensor, n_rows: int, dtype: torch.dtype) -> torch.Tensor:
    """Sparse CSR [n_rows, len(idx)] with a one at (idx[p], p)."""
    m = idx.numel()
    ascending = m < 2 or bool((idx[1:] >= idx[:-1]).all())
    cols = torch.arange(m, device=idx.device) if ascending else torch.argsort(idx, stable=True)
    crow = torch.zeros(n_rows + 1, dtype=torch.int64, device=idx.device)
    torch.cumsum(torch.bincount(idx, minlength=n_rows), 0, out=crow[1:])
    # int32 indices: smaller and what MKL's sparse kernels take natively
    return torch.sparse_csr_tensor(crow.to(torch.int32), cols.to(torch.int32),
                                   torch.ones(m, dtype=dtype, device=idx.device),
                                   size=(n_rows, m), check_invariants=False)


def _cut_chunks(kmap: KernelMap, budget: int, dtype: torch.dtype) -> list:
    """PairChunks of about `budget` pairs; rows split evenly by pair count, a row never split."""
    ks, ins, outs = [], [], []
    for k in range(kmap.volume):
        if k == kmap.center or kmap.in_idx[k].numel() == 0:
            continue
        i, o = kmap.in_idx[k], kmap.out_idx[k]
        if o.numel() > 1 and not bool((o[1:] >= o[:-1]).all()):
            order = torch.argsort(o, stable=True)
            i, o = i[order], o[order]
        ks.append(k)
        ins.append(i)
        outs.append(o)
    if not ks:
        return []
    per_row = sum(torch.bincount(o, minlength=kmap.n_out) for o in outs)
    total = int(per_row.sum())
    n_chunks = -(-total // budget)
    # row bounds splitting the pairs evenly: chunk c ends at the first row whose cumulative count
    # reaches c * total / n_chunks
    targets = torch.arange(1, n_chunks, device=per_row.device) * total // n_chunks
    bounds = torch.searchsorted(torch.cumsum(per_row, 0), targets, right=True)
    bounds = torch.unique(torch.cat([bounds.new_zeros(1), bounds, bounds.new_full((1,), kmap.n_out)]))
    cuts = torch.stack([torch.searchsorted(o, bounds) for o in outs]).tolist()
    bounds = bounds.tolist()
    chunks = []
    for c in range(len(bounds) - 1):
        r0, r1 = bounds[c], bounds[c + 1]
        parts = [(k, i[a[c]:a[c + 1]], o[a[c]:a[c + 1]]) for k, i, o, a in zip(ks, ins, outs, cuts)]
        parts = [p for p in parts if p[1].numel()]
        if not parts:
            continue
        segments, start = [], 0
        for k, i, _ in parts:
            segments.append((k, start, start + i.numel()))
            start += i.numel()
        c_in = torch.cat([p[1] for p in parts])
        c_out = torch.cat([p[2] for p in parts])
        chunks.append(PairChunk(r0, r1, c_in, c_out, segments, _ones_csr(c_out - r0, r1 - r0, dtype)))
    return chunks


def submanifold_map(cs: CoordSet, coder: KeyCoder, stride: int, kernel_size: int, dilation: int) -> KernelMap:
    """Map of a submanifold convolution (outputs = inputs) on one coordinate set.

    Offset o pairs each row i with the row j at c_i + o * dilation * stride. The pairs of -o are
    those of +o reversed, so only the first half of the offsets is searched. All queries run in
    sorted-key order, so the pair lists come out sorted by output row when rows are sorted.
    """
    offsets = kernel_offsets(kernel_size)
    vol = len(offsets)
    center = vol // 2
    in_idx = [None] * vol
    out_idx = [None] * vol
    sk = cs.sorted_keys
    n = sk.numel()

    def record(k, hit, pos):
        p = hit.nonzero().squeeze(1)
        q = pos[p]
        # offset k: output p reads input q = p + o; offset vol-1-k (= -o): output q reads input p
        in_idx[k], out_idx[k] = q, p
        in_idx[vol - 1 - k], out_idx[vol - 1 - k] = p, q

    step = dilation * stride
    if dilation > 1:
        for k in range(center):
            t = sk + coder.delta(tuple(v * step for v in offsets[k]))
            pos = torch.searchsorted(sk, t).clamp_(max=n - 1)
            record(k, sk[pos] == t, pos)
        return _attach_row_orders(KernelMap(in_idx, out_idx, n, n, center=center), cs, cs)

    # dilation 1: along z the neighbours at dz = +-1, +-2, ... of a key are the next / previous
    # keys of the sorted array when present (keys of one (b, x, y) column are consecutive and
    # spaced by the stride), so one search per (dx, dy) column finds all its dz offsets
    r = kernel_size // 2
    for k in range(0, center, kernel_size):
        dx, dy, _ = offsets[k]
        if (dx, dy) == (0, 0):
            t0 = sk
            start = torch.arange(n, device=sk.device)
        else:
            t0 = sk + coder.delta((dx * step, dy * step, 0))
            start = torch.searchsorted(sk, t0)
        for direction in (1, -1):
            if (dx, dy) == (0, 0) and direction == 1:
                continue
            pos = start if direction == 1 else start - 1
            for dz in range(0, r + 1) if direction == 1 else range(-1, -r - 1, -1):
                clamped = pos.clamp(0, n - 1)
                hit = sk[clamped] == t0 + dz * step
                record(k + r + dz, hit, clamped)
                if abs(dz) < r:
                    pos = pos + hit if direction == 1 else pos - hit.long()
    return _attach_row_orders(KernelMap(in_idx, out_idx, n, n, center=center), cs, cs)


def region_map(cs: CoordSet, coder: KeyCoder, stride: int, region: KernelRegion) -> KernelMap:
    """Submanifold map of any KernelRegion: offset k pairs row i with the row at c_i + offsets[k] * stride.

    Cube regions take submanifold_map's column search. Otherwise each offset is one searchsorted of
    shifted keys, and an offset whose negation is also in the region reuses those pairs reversed.
    """
    cube = region.as_cube()
    if cube is not None:
        return submanifold_map(cs, coder, stride, *cube)
    index = {o: k for k, o in enumerate(region.offsets)}
    vol = len(region)
    in_idx = [None] * vol
    out_idx = [None] * vol
    sk = cs.sorted_keys
    n = sk.numel()
    for k, o in enumerate(region.offsets):
        if o == (0, 0, 0) or in_idx[k] is not None:
            continue
        t = sk + coder.delta(tuple(v * stride for v in o))
        pos = torch.searchsorted(sk, t).clamp_(max=n - 1)
        p = (sk[pos] == t).nonzero().squeeze(1)
        q = pos[p]
        in_idx[k], out_idx[k] = q, p  # output p reads input q = p + o; both ascend
        neg = index.get((-o[0], -o[1], -o[2]))
        if neg is not None:
            in_idx[neg], out_idx[neg] = p, q  # -o: output q reads input p
    return _attach_row_orders(KernelMap(in_idx, out_idx, n, n, center=region.center), cs, cs)


def down_map(fine: CoordSet, coarse: CoordSet, parent: torch.Tensor, child: torch.Tensor) -> KernelMap:
    """Map of the k2s2 down convolution from `downsample`'s parent/child arrays (each fine voxel once).

    Both index lists of every offset ascend: fine positions by construction, and their parents
    because fine voxels of one child slot that ascend in key have ascending parents.
    """
    by_child = torch.argsort(child, stable=True)
    counts = torch.bincount(child, minlength=8).tolist()
    in_idx = list(torch.split(by_child, counts))
    out_idx = [parent[i] for i in in_idx]
    return _attach_row_orders(KernelMap(in_idx, out_idx, len(fine), len(coarse)), fine, coarse)


def _attach_row_orders(kmap: KernelMap, cin: CoordSet, cout: CoordSet) -> KernelMap:
    """Attach the position <-> row permutations of unsorted coordinate sets."""
    if not cin.is_sorted:
        kmap.in_order, kmap.in_inverse = cin.order, cin.inverse
    if not cout.is_sorted:
        kmap.out_order, kmap.out_inverse = cout.order, cout.inverse
    return kmap


_DERIVED = WeakTensorKeyDictionary()  # neighbour table -> (its version, {key: derived value})


def table_derived(table: torch.Tensor, key, build):
    """build(table), cached per neighbour table object under `key` (tables are cached with their
    kernel maps, so pair lists and counts derived from one are built once), and rebuilt when the
    table was modified in place (its version counter moved)."""
    version, values = _DERIVED.get(table, (None, None))
    if version != table._version:
        values = {}
        _DERIVED[table] = (table._version, values)
    if key not in values:
        values[key] = build(table)
    return values[key]
