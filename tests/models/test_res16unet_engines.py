"""One Res16UNet34C state_dict gives the same logits on every sparse engine in this process."""
import pytest
import torch

from lib.sparse.engines import why_not
from models.res16unet import Res16UNet34C
from tests.conftest import REAL_DATA
from tests.models.unet_helpers import random_cloud, real_scan_voxels, sparse_input

SCAN = REAL_DATA / "scannet" / "scans" / "scene0000_00" / "scene0000_00_vh_clean_2.ply"


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    model = Res16UNet34C(in_channels=3, num_classes=20)
    # Random running statistics, so eval-mode BN is a real per-channel affine map, not identity.
    gen = torch.Generator().manual_seed(1)
    for name, buf in model.named_buffers():
        if name.endswith("running_mean"):
            buf.copy_(0.1 * torch.randn(buf.shape, generator=gen))
        elif name.endswith("running_var"):
            buf.copy_(1 + torch.rand(buf.shape, generator=gen))
    return model.eval()


def _random_pair():
    return random_cloud(300, batch_size=2, extent=20, seed=7)


def _real_scan_crop():
    # A 2.4 m x 2.4 m column of a real room at 10 cm voxels (849 voxels): real surfaces give each
    # voxel about 9.5 occupied neighbours of 26, against about 1 in the random cloud.
    if not SCAN.exists():
        pytest.skip(f"real ScanNet scan not found at {SCAN}")
    coords, feats = real_scan_voxels(SCAN, voxel_size=0.1)
    keep = (coords[:, 1].abs() < 12) & (coords[:, 2].abs() < 12)
    return coords[keep], feats[keep]


@pytest.fixture(scope="module", params=[_random_pair, _real_scan_crop], ids=["random-2-scenes", "real-scan"])
def case(request, model):
    coords, feats = request.param()
    with torch.no_grad():
        reference = model(sparse_input(coords, feats, engine="torch"))
    return coords, feats, reference


@pytest.mark.parametrize("engine", ["spconv", "minkowski", "torchsparse"])
def test_engine_matches_the_torch_engine(engine, model, case):
    reason = why_not(engine, "cpu", training=False)
    if reason is not None:
        pytest.skip(f"engine {engine!r} cannot run inference on CPU here: {reason}")
    coords, feats, reference = case
    with torch.no_grad():
        out = model(sparse_input(coords, feats, engine=engine))
    # Tolerance against how much the logits vary from voxel to voxel (the class biases add a
    # common offset that would hide differences from an absolute-scale tolerance).
    spread = reference.std(0).mean().item()
    assert spread > 1e-3
    torch.testing.assert_close(out, reference, rtol=0, atol=1e-3 * spread)
