"""lib.pointops.knn against brute force: same distances, same neighbours up to ties, per scene."""
import pytest
import torch

from lib.pointops import knn
from tests.pointops.scans import has_scan, scan_batch


def brute_knn(ref, ref_offset, qry, qry_offset, k):
    """Every query against every reference of its scene, ranked by the exact squared distance."""
    dists, idx = [], []
    for b in range(len(ref_offset) - 1):
        r = ref[ref_offset[b]:ref_offset[b + 1]]
        for q in qry[qry_offset[b]:qry_offset[b + 1]].split(512):
            d2 = (r[None] - q[:, None]).pow(2).sum(-1)
            top, arg = d2.topk(min(k, len(r)), dim=1, largest=False)
            dists.append(top.sqrt())
            idx.append(arg + ref_offset[b])
    return torch.cat(idx), torch.cat(dists)


def check(ref, ref_offset, qry, qry_offset, k):
    idx, dist = knn(ref, ref_offset, k, qry, qry_offset, backend="torch")
    want_idx, want_dist = brute_knn(ref, ref_offset, qry, qry_offset, k)
    assert idx.shape == (len(qry), k) and dist.shape == (len(qry), k)
    assert torch.equal(dist, want_dist)  # exactly: the same float32 arithmetic, sorted ascending
    # neighbours equal up to ties: each returned index lies at its returned distance ...
    assert torch.equal((ref[idx] - qry[:, None]).pow(2).sum(-1).sqrt(), dist)
    # ... inside the query's own scene, with no repeats
    q_scene = torch.bucketize(torch.arange(len(qry)), qry_offset[1:], right=True)
    r_scene = torch.bucketize(idx, ref_offset[1:], right=True)
    assert torch.equal(r_scene, q_scene[:, None].expand_as(idx))
    assert (idx.sort(1).values.diff(dim=1) != 0).all()
    untied = (want_dist[:, 1:] - want_dist[:, :-1]).gt(0)
    assert (idx[:, :-1][untied] == want_idx[:, :-1][untied]).float().mean() > 0.999
    return idx, dist


def test_random_scenes_self_and_queries():
    g = torch.Generator().manual_seed(0)
    # three scenes of different sizes and densities, overlapping in space
    ref = torch.cat([torch.rand(700, 3, generator=g), 5 * torch.rand(1500, 3, generator=g),
                     torch.rand(40, 3, generator=g) * torch.tensor([10.0, 0.1, 0.1])])
    off = torch.tensor([0, 700, 2200, 2240])
    idx, dist = check(ref, off, ref, off, 16)
    assert torch.equal(dist[:, 0], torch.zeros(len(ref)))  # each point is its own first neighbour
    qry = torch.rand(300, 3, generator=g) * 5
    check(ref, off, qry, torch.tensor([0, 100, 250, 300]), 8)


def test_clustered_points_need_a_second_pass():
    # a dense blob and far sparse outliers: the sampled cell size fits the blob, the outliers
    # must be found by the widened search
    g = torch.Generator().manual_seed(1)
    ref = torch.cat([0.01 * torch.randn(2000, 3, generator=g), 10 * torch.randn(30, 3, generator=g)])
    check(ref, torch.tensor([0, len(ref)]), ref, torch.tensor([0, len(ref)]), 5)


def test_scene_smaller_than_k_repeats_its_farthest_point():
    ref = torch.tensor([[0.0, 0, 0], [1, 0, 0], [3, 0, 0], [0, 0, 0], [0, 2, 0]])
    off = torch.tensor([0, 3, 5])
    idx, dist = knn(ref, off, 4, backend="torch")
    assert idx[0].tolist() == [0, 1, 2, 2] and dist[0].tolist() == [0.0, 1.0, 3.0, 3.0]
    assert idx[4].tolist() == [4, 3, 3, 3] and dist[4].tolist() == [0.0, 2.0, 2.0, 2.0]


def test_duplicate_points():
    ref = torch.zeros(50, 3)
    idx, dist = knn(ref, torch.tensor([0, 50]), 16, backend="torch")
    assert torch.equal(dist, torch.zeros(50, 16)) and (idx.sort(1).values.diff(dim=1) != 0).all()


@pytest.mark.skipif(not has_scan("scene0000_00"), reason="real ScanNet scans not found (VOXSEG_REAL_DATA)")
def test_real_scans_two_scenes():
    batch, _ = scan_batch(["scene0000_00", "scene0000_01"], 0.1)
    # every 8th point of each scene queries its own scene (brute force on all pairs is slow here)
    pick = torch.cat([torch.arange(int(batch.offset[b]), int(batch.offset[b + 1]), 8) for b in range(2)])
    q_offset = torch.tensor([0, int((pick < batch.offset[1]).sum()), len(pick)])
    idx, dist = check(batch.coord, batch.offset, batch.coord[pick], q_offset, 16)
    assert torch.equal(idx[:, 0], pick) and (dist[:, 0] == 0).all()


def test_bad_arguments():
    ref = torch.rand(10, 3)
    with pytest.raises(ValueError, match="k >= 1"):
        knn(ref, torch.tensor([0, 10]), 0)
    with pytest.raises(ValueError, match="no reference points"):
        knn(ref, torch.tensor([0, 10, 10]), 2, ref, torch.tensor([0, 5, 10]))
    with pytest.raises(ValueError, match="backend"):
        knn(ref, torch.tensor([0, 10]), 2, backend="faiss")


def test_torch_cluster_backend_matches_when_installed():
    pytest.importorskip("torch_cluster", reason="torch_cluster not installed (optional fast path)")
    g = torch.Generator().manual_seed(2)
    ref = torch.rand(500, 3, generator=g)
    off = torch.tensor([0, 200, 500])
    a_idx, a_dist = knn(ref, off, 8, backend="torch")
    b_idx, b_dist = knn(ref, off, 8, backend="torch_cluster")
    assert torch.allclose(a_dist, b_dist, atol=1e-6)


class _StandInTorchCluster:
    """torch_cluster.knn's contract (pairs [2, E] = (query row, reference row), k per query when the
    scene has k points) by brute force, the pairs in a shuffled order as nothing promises one."""

    @staticmethod
    def knn(x, y, k, batch_x, batch_y):
        d2 = (y[:, None] - x[None]).pow(2).sum(-1)
        d2 = d2.masked_fill(batch_y[:, None] != batch_x[None], float("inf"))
        arg = d2.topk(k, dim=1, largest=False).indices
        pairs = torch.stack([torch.arange(len(y)).repeat_interleave(k), arg.flatten()])
        return pairs[:, torch.randperm(pairs.shape[1], generator=torch.Generator().manual_seed(5))]


def _large_scene():
    g = torch.Generator().manual_seed(4)
    return torch.rand(3000, 3, generator=g), torch.tensor([0, 1200, 3000])


def test_torch_cluster_path_orders_exactly_at_a_size_where_a_float_key_fails(monkeypatch):
    import sys
    monkeypatch.setitem(sys.modules, "torch_cluster", _StandInTorchCluster)
    ref, off = _large_scene()
    k = 8
    # the former single float key, q * (dmax + 1) + d, misorders neighbours at this size
    pairs = _StandInTorchCluster.knn(ref, ref, k, *[torch.bucketize(torch.arange(3000), off[1:], right=True)] * 2)
    q, r = pairs
    d = (ref[r] - ref[q]).pow(2).sum(-1).sqrt()
    old = d[torch.argsort(q * (d.max() + 1) + d)].view(-1, k)
    assert (old.diff(dim=1) < 0).any()
    idx, dist = knn(ref, off, k, backend="torch_cluster")
    want_idx, want_dist = brute_knn(ref, off, ref, off, k)
    assert torch.equal(dist, want_dist)
    assert torch.equal(idx, want_idx)  # random points: no ties
