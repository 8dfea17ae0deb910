"""Two gloo processes on the CPU against one: the same confusion matrix on the same data, and
(DDP averaging the gradients of equal-sized halves) the same trained weights."""
import json
import subprocess
import sys

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
