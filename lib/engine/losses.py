"""Segmentation losses: cross-entropy (ignore label, class weights, label smoothing) and
Lovász-softmax (Berman et al., CVPR 2018), combined by weights.

Lovász-softmax, from the paper: for class c let m_i = 1 - p_i(c) if the point belongs to c and
m_i = p_i(c) otherwise (the per-point error). The Jaccard loss of the set of mispredicted points M,
Delta_J(M) = |M| / |F_c ∪ M| (F_c = points of class c), is submodular; its Lovász extension
evaluated at the error vector m is sum_i m_(i) * (Delta_J(S_i) - Delta_J(S_{i-1})), where m_(1) >= m_(2) >= ...
and S_i holds the i largest errors. The loss is the mean of that over the classes present.
"""
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lib import IGNORE_INDEX


def lovasz_jaccard_grad(fg_sorted: Tensor) -> Tensor:
    """Increments Delta_J(S_i) - Delta_J(S_{i-1}) along a sorted order.

    fg_sorted: [P] float, 1 where the i-th largest error belongs to the class.
    Returns [P] float. With F = number of class points, after the first i points
    |F ∩ not-yet-mispredicted| = F - cumsum(fg) and |F ∪ S_i| = F + cumsum(1 - fg).
    """
    total_fg = fg_sorted.sum()
    intersection = total_fg - fg_sorted.cumsum(0)
    union = total_fg + (1.0 - fg_sorted).cumsum(0)
    jaccard_loss = 1.0 - intersection / union
    # Delta_J(S_0) = Delta_J(empty) = 0, so the first increment is the first value itself.
    return torch.cat([jaccard_loss[:1], jaccard_loss[1:] - jaccard_loss[:-1]])


def lovasz_softmax(probs: Tensor, labels: Tensor, classes: str = "present",
                   ignore_index: int = IGNORE_INDEX) -> Tensor:
    """Lovász-softmax loss.

    probs: [P, K] class probabilities (rows sum to 1); labels: [P] int64 in 0..K-1 or ignore_index.
    classes: "present" averages over classes that occur in `labels`, "all" over all K classes.
    Returns a scalar tensor (0 with a graph when no point is labelled).
    """
    valid = labels != ignore_index
    probs, labels = probs[valid], labels[valid]
    if labels.numel() == 0:
        return probs.sum() * 0.0
    per_class = []
    for c in range(probs.shape[1]):
        fg = (labels == c).to(probs.dtype)
        if classes == "present" and fg.sum() == 0:
            continue
        errors = (fg - probs[:, c]).abs()
        errors_sorted, order = torch.sort(errors, descending=True)
        per_class.append(torch.dot(errors_sorted, lovasz_jaccard_grad(fg[order])))
    if not per_class:
        return probs.sum() * 0.0
    return torch.stack(per_class).mean()


class SegmentationLoss(nn.Module):
    """Weighted sum of cross-entropy and Lovász-softmax on voxel logits.

    forward(logits [N, K], labels [N] int64) -> (total scalar, {term name: detached scalar}).
    Terms with weight 0 are not computed.
    """

    def __init__(self, ce_weight: float = 1.0, lovasz_weight: float = 0.0,
                 label_smoothing: float = 0.0, class_weights: Optional[list] = None,
                 num_classes: Optional[int] = None):
        super().__init__()
        if ce_weight == 0 and lovasz_weight == 0:
            raise ValueError("train.loss: ce_weight and lovasz_weight are both 0, nothing to train on")
        if class_weights and num_classes is not None and len(class_weights) != num_classes:
            raise ValueError(f"train.loss.class_weights has {len(class_weights)} entries, "
                             f"the dataset has {num_classes} classes")
        self.ce_weight = ce_weight
        self.lovasz_weight = lovasz_weight
        self.label_smoothing = label_smoothing
        weight = torch.tensor(class_weights, dtype=torch.float32) if class_weights else None
        self.register_buffer("class_weights", weight, persistent=False)

    def forward(self, logits: Tensor, labels: Tensor):
        logits = logits.float()  # losses in fp32 even under autocast
        terms = {}
        total = logits.new_zeros(())
        if self.ce_weight:
            if (labels != IGNORE_INDEX).any():
                ce = F.cross_entropy(logits, labels, weight=self.class_weights,
                                     ignore_index=IGNORE_INDEX,
                                     label_smoothing=self.label_smoothing)
            else:  # torch returns NaN for an all-ignored batch; that is no bad step
                ce = logits.sum() * 0.0
            total = total + self.ce_weight * ce
            terms["ce"] = ce.detach()
        if self.lovasz_weight:
            lov = lovasz_softmax(logits.softmax(dim=1), labels)
            total = total + self.lovasz_weight * lov
            terms["lovasz"] = lov.detach()
        return total, terms


def build_loss(loss_cfg, num_classes: int) -> SegmentationLoss:
    """Build the loss from a `LossConfig`."""
    return SegmentationLoss(loss_cfg.ce_weight, loss_cfg.lovasz_weight, loss_cfg.label_smoothing,
                            list(loss_cfg.class_weights) or None, num_classes)
