"""Losses against independent truths: Lovász-softmax against a brute-force Choquet integral of
the Jaccard set function, and cross-entropy against its formula written out."""
import math

import pytest
import torch

from lib import IGNORE_INDEX
from lib.engine.losses import SegmentationLoss, lovasz_softmax


def jaccard_set_loss(mispredicted: frozenset, foreground: frozenset) -> float:
    """Delta_J(M) = |M| / |F ∪ M| (0 for the empty set)."""
    if not mispredicted:
        return 0.0
    return len(mispredicted) / len(foreground | mispredicted)


def choquet(errors: list, foreground: frozenset) -> float:
    """Lovász extension as an integral over thresholds: sum over the distinct error levels
    v_1 < v_2 < ... of (v_k - v_{k-1}) * Delta_J({i : m_i >= v_k}), with v_0 = 0."""
    total, previous = 0.0, 0.0
    for level in sorted(set(errors)):
        above = frozenset(i for i, e in enumerate(errors) if e >= level)
        total += (level - previous) * jaccard_set_loss(above, foreground)
        previous = level
    return total


def brute_force_lovasz(probs: torch.Tensor, labels: torch.Tensor) -> float:
    per_class = []
    for c in range(probs.shape[1]):
        fg = frozenset(int(i) for i in torch.nonzero(labels == c).flatten())
        if not fg:
            continue
        errors = [(1.0 - float(probs[i, c])) if i in fg else float(probs[i, c]) for i in range(len(labels))]
        per_class.append(choquet(errors, fg))
    return sum(per_class) / len(per_class)


@pytest.mark.parametrize("seed", range(5))
def test_lovasz_matches_choquet_integral(seed):
    g = torch.Generator().manual_seed(seed)
    probs = torch.randn(7, 3, generator=g).softmax(dim=1).double()
    labels = torch.randint(0, 3, (7,), generator=g)
    assert float(lovasz_softmax(probs, labels)) == pytest.approx(brute_force_lovasz(probs, labels), abs=1e-10)


def test_lovasz_at_hard_predictions_is_one_minus_iou():
    # On one-hot probabilities the extension equals the set function: mean over classes of 1 - IoU.
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 2])
    pred = torch.tensor([0, 1, 1, 1, 2, 0, 2])
    probs = torch.nn.functional.one_hot(pred, 3).double()
    ious = []
    for c in range(3):
        inter = int(((pred == c) & (labels == c)).sum())
        union = int(((pred == c) | (labels == c)).sum())
        ious.append(inter / union)
    expected = sum(1 - i for i in ious) / 3
    assert float(lovasz_softmax(probs, labels)) == pytest.approx(expected, abs=1e-12)


def test_lovasz_ignores_ignored_points_and_has_gradient():
    probs = torch.tensor([[0.7, 0.3], [0.2, 0.8], [0.5, 0.5]], requires_grad=True)
    labels = torch.tensor([0, 1, IGNORE_INDEX])
    loss = lovasz_softmax(probs, labels)
    assert float(loss.detach()) == pytest.approx(brute_force_lovasz(probs[:2].detach(), labels[:2]))
    loss.backward()
    assert probs.grad[2].abs().sum() == 0 and probs.grad[:2].abs().sum() > 0


def test_lovasz_all_ignored_is_zero():
    probs = torch.rand(4, 3, requires_grad=True)
    loss = lovasz_softmax(probs, torch.full((4,), IGNORE_INDEX))
    assert float(loss.detach()) == 0.0
    loss.backward()


def manual_ce(logits, labels, weights, smoothing):
    """Weighted, smoothed CE written out: per point -sum_k q_k w_k log p_k (torch's definition of
    class-weighted smoothing), averaged with the target class weight as the normaliser."""
    k = logits.shape[1]
    num, den = 0.0, 0.0
    logp = logits.log_softmax(dim=1)
    for i, y in enumerate(labels.tolist()):
        if y == IGNORE_INDEX:
            continue
        nll = -float(logp[i, y]) * weights[y]
        smooth = -sum(float(logp[i, j]) * weights[j] for j in range(k)) / k
        num += (1 - smoothing) * nll + smoothing * smooth
        den += weights[y]
    return num / den


@pytest.mark.parametrize("weights,smoothing", [([1.0, 1.0, 1.0], 0.0), ([0.5, 2.0, 1.0], 0.0),
                                               ([1.0, 1.0, 1.0], 0.1), ([0.5, 2.0, 1.0], 0.2)])
def test_cross_entropy_formula(weights, smoothing):
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(9, 3, generator=g, dtype=torch.float64)
    labels = torch.tensor([0, 1, 2, IGNORE_INDEX, 1, 1, 0, IGNORE_INDEX, 2])
    loss_fn = SegmentationLoss(ce_weight=1.0, label_smoothing=smoothing, class_weights=weights, num_classes=3)
    total, terms = loss_fn(logits, labels)
    assert float(total) == pytest.approx(manual_ce(logits, labels, weights, smoothing), rel=1e-5)
    assert set(terms) == {"ce"}


def test_terms_combine_by_weight():
    g = torch.Generator().manual_seed(4)
    logits = torch.randn(12, 4, generator=g)
    labels = torch.randint(0, 4, (12,), generator=g)
    total, terms = SegmentationLoss(ce_weight=0.3, lovasz_weight=2.0)(logits, labels)
    ce = torch.nn.functional.cross_entropy(logits, labels)
    lov = brute_force_lovasz(logits.softmax(1).double(), labels)
    assert float(terms["ce"]) == pytest.approx(float(ce), rel=1e-6)
    assert float(terms["lovasz"]) == pytest.approx(lov, rel=1e-5)
    assert float(total) == pytest.approx(0.3 * float(ce) + 2.0 * lov, rel=1e-5)


def test_all_ignored_batch_is_finite():
    total, _ = SegmentationLoss()(torch.randn(3, 2, requires_grad=True), torch.full((3,), IGNORE_INDEX))
    assert math.isfinite(float(total.detach()))


def test_bad_loss_settings_are_one_line_errors():
    with pytest.raises(ValueError, match="both 0"):
        SegmentationLoss(ce_weight=0.0, lovasz_weight=0.0)
    with pytest.raises(ValueError, match="class_weights has 2 entries, the dataset has 3"):
        SegmentationLoss(class_weights=[1.0, 2.0], num_classes=3)
