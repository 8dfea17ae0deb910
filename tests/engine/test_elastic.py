"""Elastic restarts: under `torchrun --max-restarts=1 ... --resume auto`, a worker SIGKILLed
mid-training is replaced, the restarted group resumes from <run>/last.pth by itself, and the run
ends exactly as an uninterrupted run that checkpointed at the same iterations: the same loss at
every iteration, on every rank, and the same final weights. (CPU, gloo, 2 workers.)"""
import json
import os
import subprocess
import sys

import torch

from tests.conftest import ROOT

SCRIPT = ROOT / "tests" / "engine" / "elastic_main.py"
ITERATIONS, CKPT_EVERY, KILL = 6, 2, (1, 3)  # rank 1 dies after iteration 3: the restart resumes at 2


def torchrun(tmp_path, name, kill=None):
    """Train the tiny recipe under torchrun with 2 workers; returns (run folder, loss records, stderr)."""
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(
        f"_base_: demo.yaml\n"
        f"data: {{synthetic_scenes: 8, voxel_size: 0.3, batch_size: 1, num_workers: 0,"
        f" cache_dir: '{tmp_path / 'cache'}'}}\n"
        f"train: {{iterations: {ITERATIONS}, val_every: 0, ckpt_every: {CKPT_EVERY}, log_every: 1,"
        f" progress: false, hooks: [logging, checkpoint, kill_at]}}\n"
        f"export: {{ply: false}}\n")
    run_dir, losses = tmp_path / name, tmp_path / f"{name}.jsonl"
    env = os.environ | {"VOXSEG_TEST_LOSSES": str(losses), "OMP_NUM_THREADS": "1"}
    env.pop("VOXSEG_TEST_KILL", None)
    if kill:
        env["VOXSEG_TEST_KILL"] = f"{kill[0]}:{kill[1]}"
    err = tmp_path / f"{name}.stderr"
    with open(err, "w") as stderr:
        try:
            code = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
                                   "2", "--max-restarts", "1", "--monitor-interval", "0.2", str(SCRIPT), "--config",
                                   str(recipe), "--output-dir", str(run_dir), "--resume", "auto"],
                                  cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=stderr, timeout=600).returncode
        except subprocess.TimeoutExpired:
            code = "timeout"
    assert code == 0, (code, err.read_text()[-4000:])
    records = [json.loads(line) for line in losses.read_text().splitlines()]
    return run_dir, records, err.read_text()


def test_a_killed_worker_is_replaced_and_the_run_resumes_to_the_same_end(tmp_path):
    plain_dir, plain, _ = torchrun(tmp_path, "plain")
    assert "starting fresh" in (plain_dir / "log.txt").read_text()
    assert {r["attempt"] for r in plain} == {0}

    hit_dir, hit, _ = torchrun(tmp_path, "killed", kill=KILL)
    first = {(r["rank"], r["iteration"]): r["loss"] for r in hit if r["attempt"] == 0}
    second = {(r["rank"], r["iteration"]): r["loss"] for r in hit if r["attempt"] == 1}
    # The first attempt ended with the kill; the restarted group went on from last.pth (iteration 2).
    assert max(it for rank, it in first if rank == KILL[0]) == KILL[1]
    assert sorted({it for _, it in second}) == list(range(CKPT_EVERY + 1, ITERATIONS + 1))
    log = (hit_dir / "log.txt").read_text()
    assert f"resuming from {hit_dir / 'last.pth'}" in log and "resumed from" in log

    expected = {(r["rank"], r["iteration"]): r["loss"] for r in plain}
    assert len(expected) == 2 * ITERATIONS
    for key, loss in list(first.items()) + list(second.items()):
        assert loss == expected[key], (key, loss, expected[key])
    a = torch.load(plain_dir / "last.pth", weights_only=True)
    b = torch.load(hit_dir / "last.pth", weights_only=True)
    assert a["trainer"]["iteration"] == b["trainer"]["iteration"] == ITERATIONS
    for name, value in a["model"].items():
        assert torch.equal(value, b["model"][name]), name
    for name, value in a["optimizer"]["state"].items():
        assert all(torch.equal(v, b["optimizer"]["state"][name][k]) for k, v in value.items()), name
