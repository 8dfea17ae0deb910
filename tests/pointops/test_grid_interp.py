"""Grid clusters, segment reductions and inverse-distance interpolation against hand computation."""
import torch

from lib.pointops import grid_cluster, interpolate, segment_max, segment_mean


def test_interpolation_is_hand_computed_inverse_distance_weighting():
    src = torch.tensor([[0.0, 0, 0], [1, 0, 0], [0, 2, 0], [5, 5, 5],   # scene 0
                        [10, 0, 0], [11, 0, 0], [10, 1, 0]])             # scene 1
    feat = torch.tensor([[1.0, 0], [0, 1], [2, 2], [9, 9], [4, 0], [0, 4], [1, 1]])
    dst = torch.tensor([[0.5, 0, 0], [10, 0, 0]])
    out = interpolate(src, torch.tensor([0, 4, 7]), feat, dst, torch.tensor([0, 1, 2]), k=3)
    # point (0.5, 0, 0): neighbours at 0.5, 0.5 and sqrt(0.25 + 4); the far (5,5,5) is not among them
    w = torch.tensor([1 / 0.5, 1 / 0.5, 1 / (4.25 ** 0.5)])
    want0 = (w[0] * feat[0] + w[1] * feat[1] + w[2] * feat[2]) / w.sum()
    # point (10, 0, 0) coincides with a source: its weight dominates (1 / eps)
    assert torch.allclose(out[0], want0, atol=1e-6)
    assert torch.allclose(out[1], feat[4], atol=1e-6)


def test_grid_cluster_pool_and_unpool_round_trip():
    g = torch.Generator().manual_seed(0)
    grid = torch.randint(0, 9, (300, 3), generator=g).int()
    offset = torch.tensor([0, 100, 300])
    c = grid_cluster(grid, offset, 2)
    batch = torch.repeat_interleave(torch.arange(2), torch.tensor([100, 200]))
    # every fine row lands in the coarse cell floor(grid / 2) of its own scene, one row per cell
    assert torch.equal(c.grid_coord[c.cluster], torch.div(grid, 2, rounding_mode="floor"))
    assert torch.equal(c.batch[c.cluster], batch)
    keys = {(int(b), *map(int, x)) for b, x in zip(batch, torch.div(grid, 2, rounding_mode="floor"))}
    assert len(keys) == len(c.grid_coord) and torch.equal(c.offset, torch.tensor([0, int((c.batch == 0).sum()),
                                                                                   len(c.batch)]))
    assert torch.equal(c.counts, torch.bincount(c.cluster))
    # pooling then unpooling a per-cell constant gives it back
    const = torch.randn(len(c.grid_coord), 2, generator=g)
    assert torch.equal(segment_max(const[c.cluster], c.cluster, len(const)), const)
    assert torch.allclose(segment_mean(const[c.cluster], c.cluster, len(const)), const)
    values = torch.randn(300, 2, generator=g)
    mx, mean = segment_max(values, c.cluster, len(const)), segment_mean(values, c.cluster, len(const))
    for j in (0, 5, len(const) - 1):
        rows = values[c.cluster == j]
        assert torch.equal(mx[j], rows.max(0).values) and torch.allclose(mean[j], rows.mean(0))
