"""Test-time voting and the EMA against their definitions computed by hand."""
import math

import torch

from tests.engine import standins as S
from lib.config.schema_eval import TTAConfig
from lib.engine.data import SeededItems
from lib.engine.ema import ModelEMA
from lib.engine.inference import predict_scene, tta_views


def test_tta_probabilities_are_averaged_per_original_point():
    ds = S.ToyScenes(n=2, jitter=0.0)
    model = S.ToyNet(4, 3).eval()
    views = [(0.0, False, 1.0), (0.5, True, 2.0)]
    item, probs = predict_scene(model, SeededItems(ds), 1, views, S.collate, S.plain_input, torch.device("cpu"))
    coords, feats, labels, inverse = ds.scenes[1]
    feats = torch.from_numpy(feats)
    with torch.no_grad():
        expected = (model(feats).softmax(1) + model(2.0 * feats).softmax(1))[torch.from_numpy(inverse)] / 2
    assert probs.shape == (len(inverse), 3)
    assert torch.allclose(probs, expected, atol=1e-6)
    assert item["scene"] == "scene01"


def test_tta_views_cover_rotations_flips_scales():
    views = tta_views(TTAConfig(enabled=True, rotations=2, flips=["y"], scales=[1.0, 1.5]))
    assert len(views) == 8
    assert (math.pi, True, 1.5) in views  # y-mirror at rotation 0 = x-mirror + half turn
    assert tta_views(TTAConfig()) == [(0.0, False, 1.0)]


def test_ema_follows_its_recursion():
    model = torch.nn.Linear(2, 1)
    ema = ModelEMA(model, decay=0.9, warmup=False)
    start = model.weight.detach().clone()
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema.update(model)
    ema.update(model)
    # two steps towards 1: e2 = 0.81 * e0 + 0.19 * 1
    assert torch.allclose(ema.module.weight, 0.81 * start + 0.19)
    warm = ModelEMA(model, decay=0.999)
    assert warm.current_decay() == 0.1  # (1 + 0) / (10 + 0)


def test_tta_views_never_vote_twice():
    # 4 rotations: a y-mirror is an x-mirror a half turn on, already among the x views
    views = tta_views(TTAConfig(enabled=True, rotations=4, flips=["x", "y"], scales=[1.0]))
    assert len(views) == 8 and len(set(views)) == 8
    assert sorted(v for v in views if not v[1]) == [(2 * math.pi * r / 4, False, 1.0) for r in range(4)]
    # 3 rotations: y-mirrors are new views
    assert len(tta_views(TTAConfig(enabled=True, rotations=3, flips=["x", "y"], scales=[1.0]))) == 9
