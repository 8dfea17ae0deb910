"""Point Transformer (models/point_transformer.py): shapes, scenes kept apart, memorising a real scan."""
import functools

import pytest
import torch

import models
from lib.structure import PointBatch
from models.point_transformer import PointTransformer
from tests.pointops.scans import has_scan

TINY = dict(depths=(1, 1, 1), channels=(32, 32, 64), dec_depths=(1, 1), k=8, share_planes=4)


def two_scenes(seed=0):
    g = torch.Generator().manual_seed(seed)
    cells = torch.stack(torch.meshgrid(*[torch.arange(12)] * 3, indexing="ij"), -1).reshape(-1, 3)
    # one point per voxel, as the engine feeds them: distinct cells within each scene
    grid = torch.cat([cells[torch.randperm(len(cells), generator=g)[:n]] for n in (300, 200)])
    coord = grid.float() * 0.1 + 0.05 * torch.rand(500, 3, generator=g)
    return PointBatch(coord, grid.int(), torch.randn(500, 3, generator=g), torch.tensor([0, 300, 500]), 0.1)


def test_registered_and_published_layout():
    assert models.MODELS["PointTransformer"] is PointTransformer
    net = PointTransformer(3, 20)
    assert [len(b) for b in net.enc] == [1, 2, 3, 5, 2] and net.k == 16
    assert [b[0].fc1.in_features for b in net.enc] == [32, 64, 128, 256, 512]


def test_logits_per_row_and_scenes_do_not_mix():
    torch.manual_seed(0)
    net = PointTransformer(3, 5, **TINY).eval()
    batch = two_scenes()
    with torch.no_grad():
        out = net(batch)
        assert out.shape == (500, 5) and torch.isfinite(out).all()
        # changing scene 1 (features and positions) leaves scene 0's logits unchanged
        other = PointBatch(batch.coord.clone(), batch.grid_coord, batch.feat.clone(), batch.offset, 0.1)
        other.feat[300:] += 3.0
        other.coord[300:] *= 1.5
        assert torch.equal(net(other)[:300], out[:300])
        # and scene 0 alone gives the same logits as in the batch
        alone = PointBatch(batch.coord[:300], batch.grid_coord[:300], batch.feat[:300], torch.tensor([0, 300]), 0.1)
        assert torch.allclose(net(alone), out[:300], atol=1e-5)


@pytest.mark.skipif(not has_scan("scene0000_00"), reason="real ScanNet scan scene0000_00 not found (VOXSEG_REAL_DATA)")
def test_overfits_one_real_scan():
    # 25 cm voxels (~2.9k points), widths 32-32-64, k 8, Adam 0.02, 70 steps: ~10 s here; mIoU ~0.95
    from tests.pointops.overfit import overfit
    miou, losses = overfit(functools.partial(PointTransformer, **TINY), "scene0000_00", 0.25, 70, 0.02)
    assert losses[-1] < 0.2 * losses[0]
    assert miou >= 0.9


def test_bf16_autocast_on_cpu():
    torch.manual_seed(0)
    net = PointTransformer(3, 5, **TINY)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = net(two_scenes())
    out.float().sum().backward()
    assert torch.isfinite(out.float()).all()
