"""Res16UNet forward contract: shapes, row order, permutation invariance, batch independence."""
import pytest
import torch

from tests.models.unet_helpers import TinyBottleneckUNet, TinyUNet, random_cloud, sparse_input

BLOCK_KINDS = pytest.mark.parametrize("model_cls", [TinyUNet, TinyBottleneckUNet], ids=["basic", "bottleneck"])


def _fresh(model_cls):
    torch.manual_seed(0)
    return model_cls(in_channels=3, num_classes=5)


def _logits(model, coords, feats):
    with torch.no_grad():
        return model(sparse_input(coords, feats))


def test_one_row_of_logits_per_input_voxel(tiny_model):
    coords, feats = random_cloud(400, batch_size=2)
    tiny_model.eval()
    out = _logits(tiny_model, coords, feats)
    assert out.shape == (800, 5)
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()


def test_wrong_feature_width_is_a_clear_error(tiny_model):
    coords, feats = random_cloud(50, channels=4)
    with pytest.raises(ValueError, match=r"TinyUNet was built for 3 input channels per voxel, got .*\(50, 4\)"):
        tiny_model(sparse_input(coords, feats))


@BLOCK_KINDS
def test_logits_follow_the_rows_of_any_input_order(model_cls):
    # The logits of a voxel must not depend on where its row sits in the input: permuting the
    # input rows permutes the output rows the same way and changes nothing else.
    tiny_model = _fresh(model_cls).eval()
    coords, feats = random_cloud(500, batch_size=2, seed=1)
    ref = _logits(tiny_model, coords, feats)
    perm = torch.randperm(coords.shape[0], generator=torch.Generator().manual_seed(2))
    out = _logits(tiny_model, coords[perm], feats[perm])
    torch.testing.assert_close(out, ref[perm], rtol=1e-4, atol=1e-5)


def test_scenes_in_a_batch_do_not_see_each_other(tiny_model):
    # Two scenes overlapping in space, batched, give each scene's logits exactly as run alone.
    coords, feats = random_cloud(300, batch_size=2, seed=3)
    tiny_model.eval()
    together = _logits(tiny_model, coords, feats)
    for b in range(2):
        rows = coords[:, 0] == b
        alone_coords = coords[rows].clone()
        alone_coords[:, 0] = 0
        alone = _logits(tiny_model, alone_coords, feats[rows])
        torch.testing.assert_close(together[rows], alone, rtol=1e-4, atol=1e-5)


@BLOCK_KINDS
def test_training_step_reaches_every_parameter(model_cls):
    tiny_model = _fresh(model_cls).train()
    coords, feats = random_cloud(400, seed=4)
    out = tiny_model(sparse_input(coords, feats))
    out.square().mean().backward()
    missing = [name for name, p in tiny_model.named_parameters() if p.grad is None or not p.grad.any()]
    assert missing == []


def test_dropout_acts_in_training_only(tiny_model):
    torch.manual_seed(0)
    model = TinyUNet(in_channels=3, num_classes=5, dropout=0.5)
    model.load_state_dict(tiny_model.state_dict())
    coords, feats = random_cloud(300, seed=5)
    model.eval(), tiny_model.eval()
    torch.testing.assert_close(_logits(model, coords, feats), _logits(tiny_model, coords, feats))
    model.train(), tiny_model.train()
    assert not torch.allclose(_logits(model, coords, feats), _logits(tiny_model, coords, feats))
