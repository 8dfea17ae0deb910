"""Chunked neighbourhood primitives against a naive [N, K, C] gather written here, gradcheck in
float64, chunk-size independence, checkpoint recomputation, masking, autocast."""

import pytest
import torch

from lib.sparse import KernelRegion, SparseTensor, masked_softmax, neighborhood_aggregate, pair_scores
from lib.sparse import mixing, neighborhood
from lib.sparse import nn as snn
from tests.sparse.dense_ref import gathered_aggregate, random_coords

REGIONS = [KernelRegion.cube(3), KernelRegion.cross(5), KernelRegion.plane("yz", 3, 2),
           KernelRegion.custom([(2, 0, 0), (0, 1, -1), (0, 0, 0)])]


def _table(region, seed=0, grid=6, density=0.35):
    coords = random_coords(2, grid, 1, density, seed)
    return snn.neighbor_table(SparseTensor(torch.zeros(len(coords), 1), coords, engine="torch"), region)


def _inputs(nbr, c, h, a_shape, with_w, seed=0):
    g = torch.Generator().manual_seed(seed)
    n, k = nbr.shape
    m = int(nbr.max()) + 1
    v = torch.randn(m, c, dtype=torch.float64, generator=g).requires_grad_()
    shape = {"full": (n, k, h), "per_row": (n, 1, h), "shared": (1, k, h)}[a_shape]
    a = torch.randn(*shape, dtype=torch.float64, generator=g).requires_grad_()
    w = torch.randn(k, c, dtype=torch.float64, generator=g).requires_grad_() if with_w else None
    return v, a, w


@pytest.mark.parametrize("region", REGIONS, ids=lambda r: r.name)
@pytest.mark.parametrize("a_shape", ["full", "per_row", "shared"])
@pytest.mark.parametrize("with_w", [True, False])
def test_aggregate_matches_the_naive_gather_in_value_and_gradient(region, a_shape, with_w):
    nbr = _table(region)
    v, a, w = _inputs(nbr, 8, 4, a_shape, with_w)
    leaves = [t for t in (v, a, w) if t is not None]
    out = neighborhood_aggregate(v, nbr, a, w, chunk_rows=37)  # many chunks, a short last one
    ref = gathered_aggregate(v, nbr, a, w)
    torch.testing.assert_close(out, ref)
    up = torch.randn_like(ref)
    for got, want in zip(torch.autograd.grad(out, leaves, up), torch.autograd.grad(ref, leaves, up)):
        torch.testing.assert_close(got, want)


def test_aggregate_hand_computed():
    v = torch.tensor([[1.0, 2.0, 3.0, 4.0], [10.0, 20.0, 30.0, 40.0]])
    nbr = torch.tensor([[0, 1], [-1, 0], [-1, -1]])
    a = torch.tensor([[[1.0, 2.0], [0.5, -1.0]], [[7.0, 7.0], [3.0, 0.0]], [[1.0, 1.0], [1.0, 1.0]]])  # [3, 2, H=2]
    w = torch.tensor([[1.0, 1.0, 1.0, 2.0], [1.0, 0.0, 1.0, 1.0]])
    # row 0: head 0 = channels 0-1, head 1 = channels 2-3
    expect0 = [1 * 1 * 1 + 0.5 * 1 * 10, 1 * 1 * 2 + 0.5 * 0 * 20, 2 * 1 * 3 + -1 * 1 * 30, 2 * 2 * 4 + -1 * 1 * 40]
    expect1 = [3 * 1 * 1, 3 * 0 * 2, 0 * 3, 0 * 4]  # offset 0 empty: contributes nothing
    expect2 = [0.0] * 4  # no neighbour at all (with chunk_rows=1 a chunk without any pair)
    for rows in (None, 1):
        out = neighborhood_aggregate(v, nbr, a, w, chunk_rows=rows)
        torch.testing.assert_close(out, torch.tensor([expect0, expect1, expect2]))


def test_aggregate_gradcheck_float64():
    nbr = _table(KernelRegion.cross(3), seed=1, grid=3, density=0.5)
    v, a, w = _inputs(nbr, 4, 2, "full", True, seed=2)
    assert torch.autograd.gradcheck(lambda v, a, w: neighborhood_aggregate(v, nbr, a, w, chunk_rows=9), (v, a, w),
                                    fast_mode=True)
    v, a, _ = _inputs(nbr[:6], 4, 2, "shared", False, seed=3)
    assert torch.autograd.gradcheck(lambda v, a: neighborhood_aggregate(v, nbr[:6], a, chunk_rows=4), (v, a))


def test_aggregate_does_not_depend_on_the_chunk_size():
    nbr = _table(KernelRegion.cube(3), seed=4)
    v, a, w = _inputs(nbr, 6, 3, "full", True, seed=4)
    outs = [neighborhood_aggregate(v, nbr, a, w, chunk_rows=r) for r in (1, 16, 10 ** 6, None)]
    for o in outs[1:]:
        torch.testing.assert_close(o, outs[0])


def test_aggregate_cuda_branch_on_cpu(monkeypatch):
    """The index_add_ row sums that CUDA takes, forced on CPU, give the same values and gradients."""
    nbr = _table(KernelRegion.cross(3), seed=9)
    v, a, w = _inputs(nbr, 6, 2, "full", True, seed=9)
    up = torch.randn(len(nbr), 6, dtype=torch.float64)
    results = []
    for csr in (True, False):
        monkeypatch.setattr(neighborhood, "_csr_rows", lambda t, csr=csr: csr)
        out = neighborhood_aggregate(v, nbr, a, w, chunk_rows=17)
        results.append([out] + list(torch.autograd.grad(out, [v, a, w], up)))
    for x, y in zip(*results):
        torch.testing.assert_close(x, y)


def test_aggregate_never_holds_a_pair_tensor():
    """Peak CPU memory of forward + backward (lib.profiler's allocation replay) stays far below one
    [N, K, C] tensor, which the naive gather needs several of."""
    from lib.profiler.meter import peak_bytes

    nbr = _table(KernelRegion.cube(3), seed=11, grid=16, density=0.5)
    v, a, w = _inputs(nbr, 16, 2, "full", True, seed=11)
    pair_tensor = nbr.numel() * v.shape[1] * v.element_size()

    def peak(fn):
        return peak_bytes(fn, "cpu")

    def step(impl):
        v.grad = a.grad = w.grad = None
        impl().sum().backward()

    fused = peak(lambda: step(lambda: neighborhood_aggregate(v, nbr, a, w, chunk_rows=64)))
    naive = peak(lambda: step(lambda: gathered_aggregate(v, nbr, a, w)))
    assert pair_tensor > 10 * 2 ** 20 and naive > 2 * pair_tensor
    # output, the three gradients and a few chunk buffers: about a quarter of one pair tensor here
    assert fused < pair_tensor / 2


def test_aggregate_sources_may_differ_from_outputs():
    v = torch.randn(5, 2, dtype=torch.float64)
    nbr = torch.tensor([[4, -1, 0], [2, 2, -1]])
    a = torch.rand(2, 3, 1, dtype=torch.float64)
    torch.testing.assert_close(neighborhood_aggregate(v, nbr, a), gathered_aggregate(v, nbr, a, None))


def test_aggregate_bad_shapes_raise():
    nbr = torch.zeros(3, 2, dtype=torch.int64)
    v = torch.zeros(4, 6)
    with pytest.raises(ValueError, match="divide"):
        neighborhood_aggregate(v, nbr, torch.zeros(3, 2, 4))
    with pytest.raises(ValueError, match=r"\[N, K, H\]"):
        neighborhood_aggregate(v, nbr, torch.zeros(2, 2, 3))
    with pytest.raises(ValueError, match=r"\[K, C\]"):
        neighborhood_aggregate(v, nbr, torch.zeros(3, 2, 3), torch.zeros(2, 5))
    with pytest.raises(ValueError, match="int64"):
        neighborhood_aggregate(v, nbr.int(), torch.zeros(3, 2, 3))


def test_aggregate_under_cpu_autocast_bf16():
    nbr = _table(KernelRegion.cube(3), seed=5)
    v, a, w = (t.detach().float() for t in _inputs(nbr, 8, 2, "full", True, seed=5))
    v_bf = v.bfloat16().requires_grad_()
    a.requires_grad_()
    w.requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = neighborhood_aggregate(v_bf, nbr, a, w, chunk_rows=20)
    assert out.dtype == torch.float32  # promoted from bf16 v and float32 a, w; computed in float32
    ref = gathered_aggregate(v_bf.detach().float(), nbr, a.detach(), w.detach())
    torch.testing.assert_close(out, ref)  # exact float32 arithmetic on the bf16 values
    out.sum().backward()
    assert v_bf.grad.dtype == torch.bfloat16 and a.grad.dtype == torch.float32 and w.grad.dtype == torch.float32


def _score(q, kv, valid):
    """A small attention logit: per head, the dot product of q_i and k_j over the head's channels."""
    n, k, c = kv.shape
    return (q.view(n, 1, 2, c // 2) * kv.view(n, k, 2, c // 2)).sum(-1)


def test_pair_scores_match_direct_computation_and_mask_empty_slots():
    nbr = _table(KernelRegion.cross(3), seed=6)
    g = torch.Generator().manual_seed(6)
    q = torch.randn(len(nbr), 4, dtype=torch.float64, generator=g).requires_grad_()
    kv = torch.randn(int(nbr.max()) + 1, 4, dtype=torch.float64, generator=g).requires_grad_()
    s = pair_scores(_score, q, kv, nbr, chunk_rows=40)
    direct = _score(q, kv[nbr.clamp(min=0)], nbr >= 0)
    valid = nbr >= 0
    assert s.shape == (len(nbr), 7, 2)
    assert bool(torch.isneginf(s[~valid]).all())
    torch.testing.assert_close(s[valid], direct[valid])
    up = torch.randn_like(s).masked_fill(~valid.unsqueeze(-1), 0)
    got = torch.autograd.grad(s.masked_fill(~valid.unsqueeze(-1), 0), [q, kv], up)
    want = torch.autograd.grad(direct, [q, kv], up)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b)


def test_pair_scores_recompute_each_chunk_in_backward_with_parameters_in_score_fn():
    nbr = _table(KernelRegion.cube(3), seed=7)
    mlp = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2)).double()
    coords = torch.randn(len(nbr), 3, dtype=torch.float64)
    calls = []

    def score(ci, cj, valid):  # relative-position MLP, the shape of a VTR positional term
        calls.append(len(ci))
        return mlp(cj - ci.unsqueeze(1))

    grads = {}
    for recompute in (True, False):
        calls.clear()
        mlp.zero_grad()
        s = pair_scores(score, coords, coords, nbr, chunk_rows=64, recompute=recompute)
        n_forward = len(calls)
        masked_softmax(s, nbr).pow(2).sum().backward()
        assert len(calls) == (2 * n_forward if recompute else n_forward)
        grads[recompute] = [p.grad.clone() for p in mlp.parameters()]
    assert n_forward == -(-len(nbr) // 64)
    for a, b in zip(grads[True], grads[False]):
        torch.testing.assert_close(a, b)


def test_pair_scores_then_aggregate_under_cpu_autocast_bf16():
    nbr = _table(KernelRegion.cube(3), seed=10)
    proj = torch.nn.Linear(8, 8)
    feats = torch.randn(len(nbr), 8, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        qkv = proj(feats)  # bf16 under autocast
        s = pair_scores(lambda q, k, valid: (q.unsqueeze(1) * k).view(*k.shape[:2], 2, 4).sum(-1), qkv, qkv, nbr,
                        chunk_rows=50)
        attn = masked_softmax(s, nbr)
        out = neighborhood_aggregate(qkv, nbr, attn)
    assert s.dtype == torch.bfloat16 and attn.dtype == torch.float32 and out.dtype == torch.float32
    out.sum().backward()
    assert torch.isfinite(feats.grad).all() and torch.isfinite(proj.weight.grad).all()
    torch.testing.assert_close(attn.sum(1), (nbr >= 0).any(1, keepdim=True).float().expand(-1, 2))


def test_masked_softmax_ignores_empty_slots_and_gives_zeros_for_isolated_rows():
    scores = torch.tensor([[[1.0], [2.0], [5.0]], [[0.0], [0.0], [0.0]], [[3.0], [-1.0], [8.0]]],
                          requires_grad=True)
    nbr = torch.tensor([[0, 1, -1], [-1, -1, -1], [2, -1, -1]])
    p = masked_softmax(scores, nbr)
    e1, e2 = torch.exp(torch.tensor(1.0)), torch.exp(torch.tensor(2.0))
    expect = torch.tensor([[[e1 / (e1 + e2)], [e2 / (e1 + e2)], [0.0]], [[0.0]] * 3, [[1.0], [0.0], [0.0]]])
    torch.testing.assert_close(p, expect)
    (p * torch.randn_like(p)).sum().backward()
    assert torch.isfinite(scores.grad).all() and bool((scores.grad[1] == 0).all())
    # -inf scores from pair_scores at the empty slots are fine too
    s = scores.detach().masked_fill(nbr.lt(0).unsqueeze(-1), float("-inf")).requires_grad_()
    masked_softmax(s, nbr).sum().backward()
    assert torch.isfinite(s.grad).all()


def test_depthwise_region_conv_is_aggregate_with_unit_attention():
    coords = random_coords(1, 6, 1, 0.4, seed=8)
    x = SparseTensor(torch.randn(len(coords), 4, dtype=torch.float64), coords, engine="torch")
    region = KernelRegion.plane("xy")
    layer = snn.DepthwiseConv3d(4, region=region).double()
    nbr = snn.neighbor_table(x, region)
    ref = gathered_aggregate(x.feats, nbr, torch.ones(1, 1, 1, dtype=torch.float64), layer.weight)
    torch.testing.assert_close(layer(x).feats, ref)


@pytest.mark.parametrize("a_shape", ["per_row", "shared"])
@pytest.mark.parametrize("with_w", [True, False])
def test_head_weighted_depthwise_in_pieces_matches_the_naive_gather(monkeypatch, a_shape, with_w):
    """The tiled path ([N or 1, 1, H] weights, lib.sparse.mixing), in tiles of 5 rows (many tiles,
    a short last one), against the naive gather in value and gradient, and by gradcheck."""
    monkeypatch.setitem(mixing.TILE_ELEMENTS, "cpu", 5 * 6)  # tiles of 5 rows
    nbr = _table(KernelRegion.cube(3), seed=12, grid=5, density=0.5)
    v, a, w = _inputs(nbr, 6, 3, a_shape, with_w, seed=12)
    leaves = [t for t in (v, a, w) if t is not None]
    out = neighborhood_aggregate(v, nbr, a, w)
    ref = gathered_aggregate(v, nbr, a, w)
    torch.testing.assert_close(out, ref)
    up = torch.randn_like(ref)
    for got, want in zip(torch.autograd.grad(out, leaves, up), torch.autograd.grad(ref, leaves, up)):
        torch.testing.assert_close(got, want)
    small = nbr[:10]  # a table without an identity column, sources beyond its rows
    vs, as_, ws = _inputs(small, 4, 2, a_shape, with_w, seed=13)
    assert torch.autograd.gradcheck(lambda *t: neighborhood_aggregate(t[0], small, *t[1:]),
                                    tuple(t for t in (vs, as_, ws) if t is not None))


def test_tiled_pairs_are_rebuilt_when_the_table_changes_in_place():
    nbr = _table(KernelRegion.cube(3), seed=14)
    v, a, w = _inputs(nbr, 4, 2, "per_row", True, seed=14)
    neighborhood_aggregate(v, nbr, a, w)  # caches the pair lists of nbr
    nbr = nbr.clone()
    nbr[nbr[:, 0] >= 0, 0] = -1
    torch.testing.assert_close(neighborhood_aggregate(v, nbr, a, w), gathered_aggregate(v, nbr, a, w))
    nbr[:, 1] = -1  # in place on a table already seen
    torch.testing.assert_close(neighborhood_aggregate(v, nbr, a, w), gathered_aggregate(v, nbr, a, w))
