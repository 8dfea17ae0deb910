"""The official conventions on real scans: the evaluator against per-class counts taken directly on
the official ids with boolean masks (a second, independent formulation of each rule)."""
import numpy as np
import pytest
import torch

from datasets.scannet import NYU40_IDS
from lib import IGNORE_INDEX
from lib.metrics import SegEvaluator, raw_to_class
from tests.conftest import REAL_DATA

SCANNET_IDS = np.array(NYU40_IDS)


def _corrupt(gt, choices, fraction, seed):
    """A fake prediction: the ground truth with `fraction` of the points replaced from `choices`."""
    rng = np.random.default_rng(seed)
    pred = gt.copy()
    hit = rng.random(len(gt)) < fraction
    pred[hit] = rng.choice(choices, hit.sum())
    return pred


def _kitti_to_class(ids):
    """np_ioueval ids (0 = ignore, 1..19) -> class indices 0..18, IGNORE_INDEX for 0."""
    return torch.from_numpy(np.where(ids == 0, IGNORE_INDEX, ids - 1))


def test_scannet_rules_on_a_real_scan():
    path = REAL_DATA / "scannet" / "scans" / "scene0000_00" / "scene0000_00_vh_clean_2.labels.ply"
    if not path.is_file():
        pytest.skip(f"real ScanNet scan not found at {path}")
    from plyfile import PlyData

    gt = PlyData.read(str(path))["vertex"].data["label"].astype(np.int64)
    assert (~np.isin(gt, SCANNET_IDS)).any()  # the scan has non-valid ids to skip
    pred = _corrupt(gt, np.arange(0, 41), 0.3, seed=1)  # includes non-valid predicted ids
    ev = SegEvaluator([str(i) for i in SCANNET_IDS], "nan_absent")
    ev.update(raw_to_class(pred, SCANNET_IDS), raw_to_class(gt, SCANNET_IDS))
    scores = ev.compute()

    scored = np.isin(gt, SCANNET_IDS)
    expected = []
    for c in SCANNET_IDS:
        tp = np.sum(scored & (gt == c) & (pred == c))
        fn = np.sum((gt == c) & (pred != c))  # includes predictions outside the valid ids
        fp = np.sum(scored & (gt != c) & (pred == c))
        expected.append(tp / (tp + fp + fn) if tp + fp + fn else np.nan)
    np.testing.assert_allclose(scores.iou, expected, equal_nan=True)
    assert scores.miou == pytest.approx(np.nanmean(expected))
    assert scores.skipped_points == int((~scored).sum())


def test_semantickitti_rules_on_a_real_frame():
    path = REAL_DATA / "semantickitti" / "sequences" / "00" / "labels" / "000000.label"
    if not path.is_file():
        pytest.skip(f"real SemanticKITTI frame not found at {path}")
    from datasets.semantickitti import label_config

    learning_map = label_config()["learning_map"]
    semantic = np.fromfile(path, dtype=np.uint32) & 0xFFFF
    lut = np.zeros(max(learning_map) + 1, dtype=np.int64)
    for raw, train_id in learning_map.items():
        lut[raw] = train_id
    gt = lut[semantic]  # np_ioueval space: 0 = ignore, classes 1..19
    absent = [c for c in range(1, 20) if not (gt == c).any()]
    assert absent, "the frame should lack some class, so the absent-class rule is exercised"
    pred = _corrupt(gt, np.arange(0, 20), 0.3, seed=2)  # includes predictions of 0 (ignore)
    pred[np.isin(pred, absent)] = 0  # absent classes stay absent from the prediction too

    ev = SegEvaluator([str(c) for c in range(1, 20)], "zero_absent")
    ev.update(_kitti_to_class(pred), _kitti_to_class(gt))
    scores = ev.compute()

    expected = []
    for c in range(1, 20):
        tp = np.sum((gt == c) & (pred == c))
        fn = np.sum((gt == c) & (pred != c))  # includes predictions of 0
        fp = np.sum((gt != 0) & (gt != c) & (pred == c))
        expected.append(tp / (tp + fp + fn) if tp + fp + fn else 0.0)
    np.testing.assert_allclose(scores.iou, expected)
    assert scores.miou == pytest.approx(np.mean(expected))
    assert all(scores.iou[c - 1] == 0.0 for c in absent)
    # np_ioueval's getacc: correct points / labelled points predicted as one of the 19 classes
    labelled = gt != 0
    assert scores.allacc == pytest.approx(np.sum(labelled & (pred == gt)) / np.sum(labelled & (pred != 0)))
