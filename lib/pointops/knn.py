"""k nearest neighbours within each scene of a batch, without an [N, N] matrix.

The plain-PyTorch search hashes the reference points into cubic cells of side h (sorted keys +
searchsorted) and, for each query, ranks the points of the 3x3x3 cells around its own. A query
sits in the middle cell, so every point closer than the block's nearest face (at least h away) is
among those candidates: when the k-th candidate is closer than that face (or the candidates are the
whole scene) the answer is exact. Queries that fail the test are searched again with h doubled,
so every answer is exact.
h starts at the 70% quantile of the true k-th neighbour distance of a few sampled queries.
Each occupied query cell lists its candidates once (queries of one cell share them); queries with
similar candidate counts are ranked together in padded blocks, so the padding stays small.
"""
import torch

from .grid import offset_to_batch

_OFFSETS = torch.tensor([(x, y, z) for x in (-1, 0, 1) for y in (-1, 0, 1) for z in (-1, 0, 1)])
_BLOCK = 1 << 21    # candidate entries ranked at once (bounds the padded blocks' memory)
_SAMPLES = 16       # queries whose exact k-th distance sets the first cell size
_QUANTILE = 0.7
_MARGIN = 1.0 - 1e-4  # float32 distances vs the float64 cell geometry


def knn(ref_coord: torch.Tensor, ref_offset: torch.Tensor, k: int, query_coord: torch.Tensor = None,
        query_offset: torch.Tensor = None, backend: str = "auto"):
    """The k nearest reference points of every query point, in the query's own scene.

    ref_coord float [N, 3], ref_offset int64 [B + 1]; query_coord float [Q, 3] and query_offset
    int64 [B + 1] (default: the references themselves, each point its own first neighbour).
    Returns idx int64 [Q, k] (global reference rows) and dist float [Q, k] (Euclidean, ascending).
    A scene with fewer than k references repeats its farthest one in the missing columns.
    backend: "torch" (always available), "torch_cluster" (needs the package), or "auto"
    (torch_cluster when importable, else torch).
    """
    if query_coord is None:
        query_coord, query_offset = ref_coord, ref_offset
    if len(ref_offset) != len(query_offset):
        raise ValueError(f"knn: {len(ref_offset) - 1} reference scenes but {len(query_offset) - 1} query scenes")
    if k < 1:
        raise ValueError(f"knn needs k >= 1, got {k}")
    ref_counts = ref_offset[1:] - ref_offset[:-1]
    q_counts = query_offset[1:] - query_offset[:-1]
    if bool(((ref_counts == 0) & (q_counts > 0)).any()):
        raise ValueError("knn: a scene has query points but no reference points")
    if backend == "auto":
        backend = "torch_cluster" if _has_torch_cluster() else "torch"
    if backend == "torch_cluster":
        return _knn_torch_cluster(ref_coord, ref_offset, query_coord, query_offset, k)
    if backend != "torch":
        raise ValueError(f"knn backend {backend!r}; expected auto, torch or torch_cluster")
    return _knn_grid(ref_coord, ref_offset, query_coord, query_offset, k)


def _has_torch_cluster() -> bool:
    try:
        import torch_cluster  # noqa: F401
    except ImportError:
        return False
    return True


def _knn_torch_cluster(ref, ref_offset, qry, qry_offset, k):
    try:
        import torch_cluster
    except ImportError as err:
        raise ImportError("knn backend torch_cluster: pip install torch-cluster (or use backend=torch)") from err
    rb, qb = offset_to_batch(ref_offset), offset_to_batch(qry_offset)
    pairs = torch_cluster.knn(ref, qry, k, rb, qb)  # [2, E]: (query row, reference row)
    counts = torch.bincount(pairs[0], minlength=len(qry))
    if bool((counts < k).any()):  # a small scene: the grid search pads it as documented
        return _knn_grid(ref, ref_offset, qry, qry_offset, k)
    q, r = pairs[0], pairs[1]
    d = (ref[r] - qry[q]).pow(2).sum(-1).sqrt()
    # rows grouped by query, each group by distance: two stable sorts (distance, then query) are
    # exact, where one float key q * (dmax + 1) + d rounds distances away once q is large
    # (float32 keeps 24 bits: past 2048 queries the key's step is 2^-12, ~2e-4 m)
    order = torch.argsort(d, stable=True)
    order = order[torch.argsort(q[order], stable=True)]
    return r[order].view(-1, k), d[order].view(-1, k)


def _knn_grid(ref, ref_offset, qry, qry_offset, k):
    ref_batch, qry_batch = offset_to_batch(ref_offset), offset_to_batch(qry_offset)
    scene_size = (ref_offset[1:] - ref_offset[:-1])[qry_batch]
    idx = torch.empty(len(qry), k, dtype=torch.long, device=qry.device)
    dist = torch.empty(len(qry), k, dtype=qry.dtype, device=qry.device)
    todo = torch.arange(len(qry), device=qry.device)
    if len(qry) == 0:
        return idx, dist
    h = _initial_cell(ref, ref_offset, qry, qry_batch, k)
    while len(todo):
        i, d, done = _grid_pass(ref, ref_batch, qry[todo], qry_batch[todo], scene_size[todo], k, h)
        idx[todo[done]], dist[todo[done]] = i[done], d[done]
        todo = todo[~done]
        h *= 2.0
    return idx, dist


def _initial_cell(ref, ref_offset, qry, qry_batch, k) -> float:
    """A high quantile of the exact k-th neighbour distance of a few queries (metres)."""
    if len(qry) == 0:
        return 1.0
    g = torch.Generator().manual_seed(0)
    pick = torch.randperm(len(qry), generator=g)[:_SAMPLES].to(qry.device)
    kth = []
    for b in torch.unique(qry_batch[pick]).tolist():
        scene = ref[int(ref_offset[b]):int(ref_offset[b + 1])]
        mine = qry[pick[qry_batch[pick] == b]]
        # a sampled estimate only: the matmul form of cdist is fine here
        d = torch.cdist(mine.float(), scene.float(), compute_mode="use_mm_for_euclid_dist")
        kth.append(d.kthvalue(min(k, len(scene)), dim=1).values)
    h = float(torch.quantile(torch.cat(kth).double(), _QUANTILE))
    extent = float((ref.max(0).values - ref.min(0).values).max()) if len(ref) else 1.0
    # coincident points give h = 0; at most ~2^16 cells per axis keeps (scene, cell) keys in int64
    return max(h, extent * 2.0 ** -16, 1e-9)


def _grid_pass(ref, ref_batch, qry, qry_batch, scene_size, k, h):
    """One search with cell side h; returns idx [Q, k], dist [Q, k], done bool [Q]."""
    dev = qry.device
    lo = torch.minimum(ref.min(0).values, qry.min(0).values).double()
    # +1: the -1 neighbour of the lowest cell stays non-negative; +2 in the extent: no key wraps
    ref_cell = ((ref.double() - lo) / h).floor().long() + 1
    qry_cell = ((qry.double() - lo) / h).floor().long() + 1
    ext = torch.maximum(ref_cell.max(0).values, qry_cell.max(0).values) + 2

    def keys(batch, cell):
        return ((batch * ext[0] + cell[:, 0]) * ext[1] + cell[:, 1]) * ext[2] + cell[:, 2]

    ref_key = keys(ref_batch, ref_cell)
    order = torch.argsort(ref_key)
    cell_keys, cell_counts = torch.unique_consecutive(ref_key[order], return_counts=True)
    cell_starts = cell_counts.cumsum(0) - cell_counts
    # the 27 neighbour cells of every occupied query cell
    qcell_keys, qcell = torch.unique(keys(qry_batch, qry_cell), return_inverse=True)
    off = _OFFSETS.to(dev)
    delta = (off[:, 0] * ext[1] + off[:, 1]) * ext[2] + off[:, 2]
    nbr = qcell_keys[:, None] + delta[None]
    pos = torch.searchsorted(cell_keys, nbr).clamp_max(len(cell_keys) - 1)
    found = cell_keys[pos] == nbr
    cnt = torch.where(found, cell_counts[pos], 0).flatten()
    # the candidate list of every query cell, concatenated: the sorted positions of its 27 cells'
    # points, and their coordinates (queries then gather from it with one index per entry)
    cell_total = cnt.view(-1, 27).sum(1)
    cell_first = cell_total.cumsum(0) - cell_total
    n_cand = int(cell_total.sum())
    run_first = cnt.cumsum(0) - cnt
    cand = torch.arange(n_cand, device=dev) - torch.repeat_interleave(run_first - cell_starts[pos].flatten(), cnt,
                                                                      output_size=n_cand)
    cand = torch.cat([cand, cand.new_zeros(1)])  # a pad entry for the masked tail of each row
    cand_xyz = ref.index_select(0, order.index_select(0, cand))
    cand_cols = [cand_xyz[:, i].contiguous() for i in range(3)]
    total = cell_total[qcell]

    idx = torch.empty(len(qry), k, dtype=torch.long, device=dev)
    dist = torch.empty(len(qry), k, dtype=qry.dtype, device=dev)
    by_count = torch.argsort(total)
    sorted_total = total[by_count]
    first = 0
    while first < len(qry):
        # the next rows, as many as fit in _BLOCK entries at the block's widest row
        rows = _BLOCK // max(1, int(sorted_total[first]))
        last = min(len(qry), first + max(1, rows))
        while last - first > 1 and (last - first) * int(sorted_total[last - 1]) > _BLOCK:
            last = first + max(1, _BLOCK // int(sorted_total[last - 1]))
        width = max(int(sorted_total[last - 1]), 1)
        q = by_count[first:last]
        j = torch.arange(width, device=dev)
        slot = (cell_first[qcell[q]][:, None] + j).clamp_max_(n_cand)
        qq = qry[q]
        flat = slot.view(-1)  # index_select on 1-D indices is torch's fastest gather on CPU

        def axis(i):
            return (cand_cols[i].index_select(0, flat).view_as(slot) - qq[:, i:i + 1]).square_()

        d2 = axis(0)
        d2 += axis(1)
        d2 += axis(2)
        d2.masked_fill_(j >= total[q][:, None], float("inf"))
        kk = min(k, width)
        top, arg = d2.topk(kk, dim=1, largest=False, sorted=True)
        sel = order[cand[slot.gather(1, arg)]]
        if kk < k:  # fewer candidates than k: not done unless the scene is (padded below)
            top = torch.cat([top, top.new_full((len(q), k - kk), float("inf"))], 1)
            sel = torch.cat([sel, sel[:, -1:].expand(-1, k - kk)], 1)
        idx[q], dist[q] = sel, top.sqrt()
        first = last
    whole = total == scene_size
    # every point closer than the 3x3x3 block's nearest face was a candidate
    frac = (qry.double() - lo) / h
    frac = frac - frac.floor()
    reach = h * (1.0 + torch.minimum(frac, 1.0 - frac).min(1).values)
    done = whole | (dist[:, -1] < (reach * _MARGIN).to(dist.dtype))
    if bool(whole.any()):  # a whole-scene search with fewer than k points: pad with the farthest real one
        real = torch.clamp(scene_size, max=k)
        col = torch.minimum(torch.arange(k, device=dev)[None], (real - 1)[:, None])
        idx = torch.where(whole[:, None], idx.gather(1, col), idx)
        dist = torch.where(whole[:, None], dist.gather(1, col), dist)
    return idx, dist, done
