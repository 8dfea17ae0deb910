"""The evaluator against confusion matrices and scores computed by hand, in every convention."""
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from datasets.scannet import CLASS_NAMES as SCANNET_NAMES
from datasets.scannet import NYU40_IDS as SCANNET_IDS
from lib import IGNORE_INDEX as IGN
from lib.config import ConfigError
from lib.metrics import (SegEvaluator, compute_scores, raw_to_class, resolve_convention, split_batch_points,
                         voxel_to_points)



def _evaluate(gt, pred, names, convention):
    ev = SegEvaluator(names, convention)
    ev.update(torch.tensor(pred), torch.tensor(gt))
    return ev, ev.compute()


def test_nan_absent_with_ignore_labels_and_absent_class():
    # classes a, b, c, d; d is absent from GT and prediction; two points carry the ignore label
    # (one of them predicted as d, which must not make d "present").
    gt = [0, 0, 0, 1, 1, 2, 2, 2, IGN, IGN, 1]
    pred = [0, 0, 1, 1, 2, 2, 2, 1, 1, 3, 1]
    ev, s = _evaluate(gt, pred, ["a", "b", "c", "d"], "nan_absent")
    by_hand = [[2, 1, 0, 0, 0],  # rows = GT a..d, columns = pred a..d + invalid
               [0, 2, 1, 0, 0],
               [0, 1, 2, 0, 0],
               [0, 0, 0, 0, 0]]
    assert ev.confusion.valid().tolist() == by_hand
    assert ev.confusion.skipped == 2
    # a: tp 2, fn 1, fp 0; b: tp 2, fn 1, fp 2; c: tp 2, fn 1, fp 1; d: absent -> NaN
    np.testing.assert_allclose(s.iou[:3], [2 / 3, 2 / 5, 2 / 4])
    assert math.isnan(s.iou[3]) and math.isnan(s.acc[3])
    assert s.miou == pytest.approx((2 / 3 + 2 / 5 + 2 / 4) / 3)
    np.testing.assert_allclose(s.acc[:3], [2 / 3, 2 / 3, 2 / 3])
    assert s.macc == pytest.approx(2 / 3)
    assert s.allacc == pytest.approx(6 / 9)
    assert s.scored_points == 9 and s.skipped_points == 2


def test_scannet_official_non_valid_gt_skipped_and_non_valid_prediction_is_a_miss():
    # Raw NYU40 ids. GT 0 (unannotated), 50 (not NYU40) and 13 (pillow, not a benchmark class) are
    # skipped; predictions 13 and 40 are not valid ids, so they are misses of the GT class.
    gt_raw = [1, 1, 2, 2, 5, 0, 50, 13, 5, 3]
    pred_raw = [1, 13, 2, 1, 5, 1, 2, 1, 40, 3]
    ev = SegEvaluator(SCANNET_NAMES, "nan_absent")  # ScanNet's convention
    ev.update(raw_to_class(pred_raw, SCANNET_IDS), raw_to_class(gt_raw, SCANNET_IDS))
    s = ev.compute()
    by_hand = np.zeros((20, 21), dtype=np.int64)
    wall, floor, cabinet, chair, invalid = 0, 1, 2, 4, 20
    by_hand[wall, wall] = 1
    by_hand[wall, invalid] = 1
    by_hand[floor, floor] = 1
    by_hand[floor, wall] = 1
    by_hand[chair, chair] = 1
    by_hand[chair, invalid] = 1
    by_hand[cabinet, cabinet] = 1
    np.testing.assert_array_equal(ev.confusion.valid().numpy(), by_hand)
    assert ev.confusion.skipped == 3
    # wall: tp 1, fn 1 (the miss), fp 1 (floor predicted wall) -> 1/3; floor 1/2; cabinet 1; chair 1/2
    assert s.iou[wall] == pytest.approx(1 / 3)
    assert s.iou[floor] == pytest.approx(1 / 2)
    assert s.iou[cabinet] == pytest.approx(1.0)
    assert s.iou[chair] == pytest.approx(1 / 2)
    assert np.isnan(np.delete(s.iou, [wall, floor, cabinet, chair])).all()
    assert s.miou == pytest.approx((1 / 3 + 1 / 2 + 1 + 1 / 2) / 4)
    assert s.allacc == pytest.approx(4 / 7)
    assert "convention: nan_absent" in ev.table()


def test_zero_absent_class_scores_zero_and_counts_in_the_mean():
    # classes car, road, building (KITTI ids 1, 2, 3; 0 = ignore). building is absent from both
    # GT and prediction; GT ignore points are dropped; a prediction of ignore on road is a miss.
    gt = [0, 0, 0, 1, 1, 1, IGN, IGN]
    pred = [0, 0, 1, 1, 1, IGN, 2, 0]
    names = ["car", "road", "building"]
    ev, s = _evaluate(gt, pred, names, "zero_absent")  # SemanticKITTI's convention
    by_hand = [[0, 0, 0, 0],  # np_ioueval layout: index 0 = ignore, rows = GT, columns = prediction
               [0, 2, 1, 0],  # car: 2 right, 1 predicted road
               [1, 0, 2, 0],  # road: 2 right, 1 predicted ignore (a miss)
               [0, 0, 0, 0]]  # building: absent
    assert ev.confusion.ignore_first_layout().tolist() == by_hand
    # car: tp 2, fn 1, fp 0 -> 2/3; road: tp 2, fn 1, fp 1 -> 1/2; building: 0 (not NaN)
    np.testing.assert_allclose(s.iou, [2 / 3, 1 / 2, 0.0])
    assert s.miou == pytest.approx((2 / 3 + 1 / 2 + 0.0) / 3)
    # np_ioueval's getacc: 4 right out of the 5 points predicted as a class (the road point
    # predicted ignore leaves the denominator); nan_absent counts it: 4 / 6
    assert s.allacc == pytest.approx(4 / 5)
    # nan_absent would leave building out of the mean instead
    _, nan_absent = _evaluate(gt, pred, names, "nan_absent")
    assert nan_absent.miou == pytest.approx((2 / 3 + 1 / 2) / 2)
    assert nan_absent.allacc == pytest.approx(4 / 6)
    assert "convention: zero_absent" in ev.table()


def test_zero_absent_allacc_matches_np_ioueval_on_a_hand_made_matrix():
    # 3 classes + ignore; rows GT, columns prediction (last = prediction in the ignore slot):
    valid = torch.tensor([[5, 1, 0, 2],
                          [0, 4, 1, 1],
                          [1, 0, 3, 0]])
    s = compute_scores(valid, "zero_absent", ["a", "b", "c"])
    # np_ioueval (conf[pred, gt], ignore row/column 0): total_tp = 5 + 4 + 3 = 12; total = tp + fp over
    # classes 1..3 = points predicted a, b or c = 6 + 5 + 4 = 15 (the 3 ignore-slot predictions are out)
    assert s.allacc == pytest.approx(12 / 15)
    # IoU: a 5 / (8 + 6 - 5), b 4 / (6 + 5 - 4), c 3 / (4 + 4 - 3); mean over all three
    np.testing.assert_allclose(s.iou, [5 / 9, 4 / 7, 3 / 5])
    assert s.miou == pytest.approx((5 / 9 + 4 / 7 + 3 / 5) / 3)
    assert compute_scores(valid, "nan_absent", ["a", "b", "c"]).allacc == pytest.approx(12 / 18)


def test_updates_accumulate_and_reset_clears():
    ev = SegEvaluator(["a", "b"])
    ev.update(torch.tensor([0, 1]), torch.tensor([0, 0]))
    ev.update(torch.tensor([1]), torch.tensor([1]))
    assert ev.confusion.valid().tolist() == [[1, 1, 0], [0, 1, 0]]
    ev.reset()
    assert ev.confusion.matrix.sum() == 0


def test_numpy_inputs_count_like_tensors():
    ev = SegEvaluator(["a", "b"])
    ev.update(np.array([0, 1, 1]), np.array([0, 0, IGN]))
    assert ev.confusion.valid().tolist() == [[1, 1, 0], [0, 0, 0]]


def test_voxel_logits_reach_the_original_points_through_inverse():
    logits = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])  # voxel classes 0, 1, 0
    inverse = torch.tensor([2, 0, 1, 1, 0])
    assert voxel_to_points(logits, inverse).tolist() == [0, 0, 1, 1, 0]
    # a batch of two scenes: voxels 0-1 belong to scene 0, voxel 2 to scene 1
    preds = split_batch_points(logits, torch.tensor([0, 2, 3]), [torch.tensor([1, 0, 1]), torch.tensor([0, 0])])
    assert [p.tolist() for p in preds] == [[1, 0, 1], [0, 0]]


def test_update_batch_scores_points_not_voxels():
    # 2 voxels stand for 5 points; scoring voxels would give a different accuracy than points
    logits = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    batch = {"offsets": torch.tensor([0, 2]), "inverse": [torch.tensor([0, 0, 0, 0, 1])],
             "point_labels": [torch.tensor([0, 0, 0, 1, 1])]}
    ev = SegEvaluator(["a", "b"])
    preds = ev.update_batch(logits, batch)
    assert preds[0].tolist() == [0, 0, 0, 0, 1]
    assert ev.compute().allacc == pytest.approx(4 / 5)


def test_inverse_out_of_range_is_an_error():
    with pytest.raises(ValueError, match="inverse"):
        voxel_to_points(torch.zeros(2, 3), torch.tensor([0, 2]))


def test_convention_auto_takes_the_meta_aliases_resolve_and_unknown_names_fail():
    import datasets.registry

    datasets.registry.dataset_names()  # registering the datasets adds their names as aliases
    assert resolve_convention("auto", SimpleNamespace(convention="zero_absent")) == "zero_absent"
    assert resolve_convention("auto", None) == "nan_absent"
    assert resolve_convention("nan_absent", SimpleNamespace(convention="zero_absent")) == "nan_absent"
    # old recipe values keep their numbers
    assert resolve_convention("standard") == "nan_absent"
    assert resolve_convention("scannet") == "nan_absent"
    assert resolve_convention("semantickitti") == "zero_absent"
    with pytest.raises(ConfigError, match="unknown evaluation convention 'zero_absnt' for 'eval.convention'; "
                                          "did you mean 'zero_absent'"):
        resolve_convention("zero_absnt")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device to check on-device accumulation")
def test_matrix_accumulates_on_the_cuda_device():
    ev = SegEvaluator(["a", "b"], device="cuda")
    ev.update(torch.tensor([0, 1, 1], device="cuda"), torch.tensor([0, 0, 1], device="cuda"))
    assert ev.confusion.matrix.is_cuda
    assert ev.confusion.valid().tolist() == [[1, 1, 0], [0, 1, 0]]
