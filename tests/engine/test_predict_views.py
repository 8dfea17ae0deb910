"""Predict mode's per-scan inference (lib/engine/modes/predict.ScanPredictor) against test mode's
(lib/engine/inference.predict_scene) on the same scan: equal probabilities with one view and with
test-time views, tiled or not when the tiles' bands cover the receptive field; the voxel budget
chosen from predict.max_voxels, data.memory_budget or neither."""
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from datasets.collate import collate_fn
from datasets.scans import ScanDataset
from lib.config import load_config
from lib.engine.data import SeededItems
from lib.engine.inference import predict_scene, tta_views
from lib.engine.inputs import InputMaker
from lib.engine.modes.predict import ScanPredictor
from tests.datasets.data_helpers import write_ply
from tests.engine.test_tiling import _UNet  # a sparse U-Net with a stride-2 level, receptive radius < 10 voxels


@pytest.fixture(scope="module")
def scan(tmp_path_factory):
    rng = np.random.default_rng(0)
    n = 6000
    xyz = np.concatenate([rng.random((n, 2)) * [6, 4], rng.random((n, 1)) * 0.1], 1)  # a floor
    xyz[: n // 3, 2] += rng.random(n // 3) * 2.5  # and a few things on it
    cols = {"x": xyz[:, 0].astype(np.float32), "y": xyz[:, 1].astype(np.float32), "z": xyz[:, 2].astype(np.float32)}
    cols |= {c: rng.integers(0, 256, n).astype(np.uint8) for c in ("red", "green", "blue")}
    path = tmp_path_factory.mktemp("scan") / "room.ply"
    write_ply(path, cols)
    return path


def _setup(scan, overrides=()):
    cfg = load_config("demo.yaml", list(overrides))
    card = {"dataset": "scannet", "class_names": [f"c{k}" for k in range(5)], "in_channels": 3,
            "num_classes": 5, "palette": [[k, k, k] for k in range(5)], "raw_ids": [], "benchmark": None,
            "convention": "nan_absent", "label_values": None, "voxel_size": 0.1, "features": ["rgb"]}
    torch.manual_seed(0)
    model = _UNet(3, 8, 5).eval()
    run = SimpleNamespace(cfg=cfg, collate_fn=collate_fn, make_input=InputMaker("torch", 0.1), device="cpu")
    items = SeededItems(ScanDataset([scan], card, cfg.data), cfg.seed)
    return run, model, card, items


@pytest.mark.parametrize("tta,amp", [(False, "none"), (True, "none"), (False, "bf16")])
def test_predict_equals_test_modes_inference(scan, tta, amp):
    from lib.engine.precision import autocast

    views = ["eval.tta.enabled=true", "eval.tta.rotations=2", "eval.tta.flips=[x]"] if tta else []
    run, model, card, items = _setup(scan, views + [f"train.amp={amp}"])
    item, probs, record = ScanPredictor(run, model, card)(items, 0)
    expected_views = tta_views(run.cfg.eval.tta)
    assert record["views"] == len(expected_views) == (4 if tta else 1) and record["tiles"] == 1
    _, reference = predict_scene(model, items, 0, expected_views, collate_fn, InputMaker("torch", 0.1).for_model(model),
                                 "cpu", autocast=lambda: autocast(amp, torch.device("cpu")))
    torch.testing.assert_close(probs, reference, rtol=1e-5, atol=1e-6)
    assert len(probs) == len(item["points"]) == 6000


def test_tiled_views_equal_whole_views_with_wide_bands(scan):
    run, model, card, items = _setup(scan, ["eval.tta.enabled=true", "eval.tta.rotations=2"])
    _, whole, _ = ScanPredictor(run, model, card)(items, 0)
    # receptive radius < 10 voxels = 1 m at 10 cm; bands of 1 m cover it
    run, model, card, items = _setup(scan, ["eval.tta.enabled=true", "eval.tta.rotations=2",
                                            "predict.max_voxels=2500", "predict.tile_overlap=0.2",
                                            "predict.tile_context=0.8"])
    _, tiled, record = ScanPredictor(run, model, card)(items, 0)
    assert record["tiles"] > 2
    torch.testing.assert_close(tiled, whole, rtol=1e-4, atol=1e-6)


def test_the_voxel_budget_comes_from_max_voxels_or_the_memory_budget(scan):
    run, model, card, items = _setup(scan, ["predict.max_voxels=1234", "predict.tile_overlap=0.2", "predict.tile_context=0.2"])
    predictor = ScanPredictor(run, model, card)
    predictor(items, 0)
    assert predictor.max_voxels == 1234 and predictor.budget["source"] == "predict.max_voxels"
    run, model, card, items = _setup(scan, ["data.memory_budget=6MB", "predict.tile_overlap=0.2",
                                            "predict.tile_context=0.2"])
    predictor = ScanPredictor(run, model, card)
    _, _, record = predictor(items, 0)
    assert predictor.budget["source"] == "data.memory_budget" and predictor.budget["budget_bytes"] == 6_000_000
    assert predictor.max_voxels > 0 and record["peak_bytes"] <= 6_000_000
    run, model, card, items = _setup(scan)
    predictor = ScanPredictor(run, model, card)
    predictor(items, 0)
    assert predictor.max_voxels == 0
