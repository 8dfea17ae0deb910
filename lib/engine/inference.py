"""Inference: validation over a loader, and full-resolution test predictions with test-time
augmentation voting (class probabilities averaged per ORIGINAL point over the views)."""
import contextlib
import math
from fractions import Fraction

import torch

from lib.engine.signals import check_signal
from lib.model_contract import parse_output


def tta_views(tta_cfg) -> list:
    """(rotation_z radians, flip_x, scale) for every view of an `eval.tta` config.

    Views are rotations 2*pi*r/R, times {no flip} plus each flip in `flips`, times `scales`.
    A mirror of y equals a mirror of x followed by a half turn about z, so `get_view`'s
    single flip_x covers both axes.
    """
    if not tta_cfg.enabled:
        return [(0.0, False, 1.0)]
    views, seen = [], set()
    rotations = max(1, tta_cfg.rotations)
    for r in range(rotations):
        for flip in [None, *tta_cfg.flips]:
            if flip not in (None, "x", "y"):
                raise ValueError(f"eval.tta.flips: unknown axis {flip!r} (x|y)")
            # the view's rotation in exact turns: with an even rotation count a y-mirror lands on an
            # x-mirror view already listed, which must not vote twice
            turns = (Fraction(r, rotations) + (Fraction(1, 2) if flip == "y" else 0)) % 1
            for scale in tta_cfg.scales:
                key = (turns, flip is not None, float(scale))
                if key not in seen:
                    seen.add(key)
                    views.append((2 * math.pi * float(turns), flip is not None, float(scale)))
    return views


@torch.no_grad()
def validate(model, loader, make_input, evaluator, device, autocast=None) -> dict:
    """Scores of `model` on every scene of `loader` (this rank's share), summed over ranks.

    make_input: (batch, device) -> model input; autocast: () -> context (the trainer's AMP).

    Predictions are made per voxel and scored on the original points through `inverse`.
    Returns the evaluator's score dict (mIoU, mAcc, allAcc, per_class, convention ...).
    """
    was_training = model.training
    model.eval()
    evaluator.reset()
    for batch in loader:
        check_signal()  # a SIGTERM stops a long validation between batches (lib/engine/signals.py)
        with autocast() if autocast else contextlib.nullcontext():
            logits = parse_output(model(make_input(batch, device))).logits
        evaluator.update_batch(logits.float(), batch)
    evaluator.all_reduce()
    model.train(was_training)
    return evaluator.compute().to_dict()


@torch.no_grad()
def predict_scene(model, items, index: int, views: list, collate_fn, make_input, device, autocast=None):
    """Class probabilities of every original point of scene `index`, forwards under `autocast`
    (() -> context: the recipe's precision, lib/engine/precision.py; None: fp32).

    items: a `lib.engine.data.SeededItems`. One plain view uses `items.item(index)`; otherwise each
    view comes from `items.get_view(index, rotation_z, flip_x, scale)` and the per-point softmax
    probabilities are averaged. Returns (first view's item, probs float32 [P, K] on `device`).
    """
    model.eval()
    plain = views == [(0.0, False, 1.0)]
    total, first = None, None
    for rotation_z, flip_x, scale in views:
        item = items.item(index) if plain else items.get_view(index, rotation_z, flip_x, scale)
        batch = collate_fn([item])
        with autocast() if autocast else contextlib.nullcontext():
            logits = parse_output(model(make_input(batch, device))).logits
        inverse = batch["inverse"][0].to(device)
        probs = logits.float().softmax(dim=1)[inverse]
        if first is None:
            first, total = item, probs
        elif probs.shape[0] != total.shape[0]:
            raise ValueError(f"scene {item['scene']}: view {rotation_z, flip_x, scale} has "
                             f"{probs.shape[0]} points, the plain view {total.shape[0]}")
        else:
            total = total + probs
    return first, total / len(views)
