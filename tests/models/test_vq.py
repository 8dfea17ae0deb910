"""Vector quantiser: nearest code, identity straight-through gradient, losses, usage, dead-code reset."""
import math

import pytest
import torch

from models.vq import VectorQuantizer, VQAttentionBlock
from tests.models.attention_helpers import small_cloud


@pytest.mark.parametrize("norm", ["l1", "l2"])
def test_snaps_to_the_nearest_code_and_the_losses_match_their_definition(norm):
    torch.manual_seed(0)
    vq = VectorQuantizer(5, 3, norm=norm, w_codebook=0.5, w_commit=2.0)
    e = torch.randn(40, 3)
    z, index, losses, logs = vq(e)
    dist = [[(a - c).abs().sum().item() if norm == "l1" else (a - c).pow(2).sum().item()
             for c in vq.codebook.detach()] for a in e]
    expected = torch.tensor([min(range(5), key=lambda m: row[m]) for row in dist])
    assert torch.equal(index, expected)
    torch.testing.assert_close(z.detach(), vq.codebook.detach()[expected])
    mean_dist = torch.tensor([row[m] for row, m in zip(dist, expected.tolist())]).mean()
    torch.testing.assert_close(losses["vq_codebook"].detach(), 0.5 * mean_dist)
    torch.testing.assert_close(losses["vq_commit"].detach(), 2.0 * mean_dist)
    counts = torch.bincount(expected, minlength=5).float() / 40
    entropy = -sum(p * math.log(p) for p in counts.tolist() if p > 0)
    assert float(logs["vq_perplexity"]) == pytest.approx(math.exp(entropy), rel=1e-5)
    assert float(logs["vq_dead_codes"]) == int((counts == 0).sum())


def test_straight_through_gradient_is_the_identity_and_each_loss_reaches_its_side():
    torch.manual_seed(0)
    vq = VectorQuantizer(4, 6)
    e = torch.randn(10, 6, requires_grad=True)
    z, _, losses, _ = vq(e)
    upstream = torch.randn(10, 6)
    (e_grad,) = torch.autograd.grad((z * upstream).sum(), e)
    torch.testing.assert_close(e_grad, upstream)
    code_grad, e_grad = torch.autograd.grad(losses["vq_codebook"], [vq.codebook, e], allow_unused=True)
    assert code_grad.abs().max() > 0 and e_grad is None
    code_grad, e_grad = torch.autograd.grad(losses["vq_commit"], [vq.codebook, e], allow_unused=True)
    assert code_grad is None and e_grad.abs().max() > 0


def test_dead_codes_are_redrawn_from_recent_inputs():
    torch.manual_seed(0)
    vq = VectorQuantizer(3, 2, reset_every=2, memory=8).train()
    with torch.no_grad():
        vq.codebook.copy_(torch.tensor([[0.0, 0.0], [100.0, 100.0], [-100.0, 50.0]]))
    e = torch.randn(6, 2) * 0.1
    vq(e)
    vq.on_train_progress(1, 0.5)  # not a reset step: nothing moves
    assert vq.codebook[1].tolist() == [100.0, 100.0]
    vq.on_train_progress(2, 1.0)
    recent = {tuple(r) for r in e.tolist()}
    assert tuple(vq.codebook[1].tolist()) in recent and tuple(vq.codebook[2].tolist()) in recent
    assert vq.codebook[0].tolist() == [0.0, 0.0] and float(vq.usage.sum()) == 0


def test_attention_block_returns_named_losses_and_logs_and_trains_its_codebook():
    torch.manual_seed(0)
    block = VQAttentionBlock(8, 8, heads=2, num_codes=4).train()
    out = block(small_cloud(n=80))
    losses, logs = block.pop_aux()
    assert set(losses) == {"vq_codebook", "vq_commit"} and set(logs) == {"vq_perplexity", "vq_dead_codes"}
    (out.feats.square().sum() + sum(losses.values())).backward()
    assert block.quantizer.codebook.grad.abs().max() > 0
    assert block.to_logits.weight.grad.abs().max() > 0  # through the straight-through estimator
    assert block.value.weight.grad.abs().max() > 0
    assert block.pop_aux() == ({}, {})
