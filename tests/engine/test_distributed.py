"""Two gloo processes on the CPU against one: the same confusion matrix on the same data, and
(DDP averaging the gradients of equal-sized halves) the same trained weights."""
import json
import subprocess
import sys

import pytest
import torch

from tests.conftest import ROOT

SCRIPT = ROOT / "tests" / "engine" / "standin_main.py"


def run_script(*args):
    out = subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], cwd=ROOT, capture_output=True,
                         text=True, timeout=240)
    assert out.returncode == 0, out.stderr[-3000:]
    return out


def test_two_gloo_processes_match_one(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    # Per-process batch 1 on two ranks = batch 2 on one rank: rank r takes positions r, r+2, ...
    # of the same epoch permutation, and every scene has the same number of labelled voxels, so
    # the mean of the two ranks' mean losses is the one-process mean loss.
    run_script("--mode", "train", "--output-dir", one, "data.batch_size=2")
    run_script("--mode", "train", "--output-dir", two, "--nproc", "2", "data.batch_size=1")
    w1 = torch.load(one / "last.pth", weights_only=True)
    w2 = torch.load(two / "last.pth", weights_only=True)
    assert w2["format"] == 2 and w2["trainer"]["world_size"] == 2 and len(w2["trainer"]["rng"]) == 2
    for name, value in w1["model"].items():
        assert torch.allclose(value, w2["model"][name], atol=1e-6), name
    assert (two / "summary.json").is_file() and (two / "log.txt").is_file()

    run_script("--mode", "test", "--output-dir", one / "test", "--weights", one / "last.pth")
    run_script("--mode", "test", "--output-dir", two / "test", "--weights", one / "last.pth", "--nproc", "2")
    m1 = json.loads((one / "test" / "metrics.json").read_text())
    m2 = json.loads((two / "test" / "metrics.json").read_text())
    assert m1["confusion_matrix"] == m2["confusion_matrix"]
    assert sum(map(sum, m1["confusion_matrix"])) == 4 * 39 * 2  # 4 val scenes, 39 labelled voxels x 2 points


def test_ranks_buffers_differ_until_averaged(tmp_path):
    """The suspicion itself: after a DDP step the ranks' BatchNorm running statistics (and the
    EMA's) differ; `average_buffers` makes them the mean over ranks, num_batches_tracked equal."""
    import torch.multiprocessing as mp

    from tests.engine.standins import bn_rank_worker

    mp.spawn(bn_rank_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    for tag in ("model", "ema"):
        key = f"{tag}.net.1.running_mean"
        assert not torch.allclose(r0["before"][key], r1["before"][key], atol=1e-3), key
    for key, value in r0["after"].items():
        assert torch.equal(value, r1["after"][key]), key
        if value.is_floating_point():
            mean = (r0["before"][key].double() + r1["before"][key].double()) / 2
            assert torch.allclose(value.double(), mean, atol=1e-6), key
        else:
            assert torch.equal(value, r0["before"][key]), key


@pytest.mark.parametrize("amp", ["none", "bf16"])
def test_logged_validation_is_the_saved_model(tmp_path, amp):
    """Two ranks with BatchNorm (momentum 1: running stats = the rank's last batch, so ranks differ
    as much as their data) and an EMA: the best validation mIoU the run logged must be what
    `--mode test` scores on best.pth, i.e. every rank validated the model that was saved, at the
    recipe's precision (bf16 autocast on the CPU too)."""
    run = tmp_path / "run"
    model = "model.args={bn: true, bn_momentum: 1.0}"
    precision = f"train.amp={amp}"
    run_script("--mode", "train", "--output-dir", run, "--nproc", "2", "data.batch_size=1", model, precision,
               "train.val_every=2", "train.iterations=6", "train.ema.enabled=true", "train.ema.decay=0.5")
    logged = json.loads((run / "summary.json").read_text())
    run_script("--mode", "test", "--output-dir", run / "test", "--weights", run / "best.pth", model, precision)
    tested = json.loads((run / "test" / "summary.json").read_text())
    want = {"none": "fp32", "bf16": "bf16"}[amp]
    assert logged["precision"] == tested["precision"] == want
    assert json.loads((run / "test" / "metrics.json").read_text())["precision"] == want
    logged, tested = logged["metrics"], tested["metrics"]
    assert logged["miou"] == pytest.approx(tested["miou"], abs=1e-12)
    assert logged["per_class_iou"] == pytest.approx(tested["per_class_iou"], abs=1e-12)
