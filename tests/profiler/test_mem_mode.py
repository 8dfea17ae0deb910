"""`--mode profile` on the engine's stand-ins: the report layout, rank 0 alone writes, a budget gives a
limit; `data.limit_numpoints: auto` resolves from a memory budget; the trainer hook's scalars."""
import json
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from lib.config import ConfigError
from lib.engine.storage import EventStorage
from lib.engine.auto_limit import measure_limit
from lib.engine.memory_hook import MemoryHook
from lib.engine.modes.profile import run_profile_mode
from lib.profiler.fit import measure_pass
from lib.profiler.report import static_bytes
from tests.engine import standin_main
from tests.engine import standins as S

MODULE_KEYS = {"name", "fwd_saved_bytes", "fwd_peak_bytes", "bwd_peak_bytes", "fwd_ms", "bwd_ms"}


def _run(tmp_path, rank=0, overrides=()):
    cfg = standin_main.config(["profile.depth=2", "profile.warmup=0", *overrides])
    return SimpleNamespace(cfg=cfg, mode="profile", run_dir=tmp_path, device=torch.device("cpu"), rank=rank,
                           world=2, build_dataset=S.build_dataset, build_model=S.build_model,
                           collate_fn=S.collate, make_input=S.plain_input, weights="")


def test_profile_mode_writes_the_report_on_rank_0(tmp_path, capsys):
    report = run_profile_mode(_run(tmp_path, overrides=["data.memory_budget=2MB", "profile.chrome_trace=true"]))
    written = json.loads((tmp_path / "memory_report.json").read_text())
    assert written == json.loads(json.dumps(report))
    assert {"device", "voxels", "total_peak_bytes", "modules", "points_model"} <= set(written)
    assert written["voxels"] == 80  # two stand-in scenes of 40 voxels
    assert [m["name"] for m in written["modules"]] == ["net.0", "net.1", "net.2", "net.3"]
    assert all(MODULE_KEYS <= set(m) for m in written["modules"])
    relu = written["modules"][1]
    assert relu["fwd_saved_bytes"] == 80 * 16 * 4  # ToyNet's hidden width is 16
    assert set(written["points_model"]) == {"base_bytes", "bytes_per_voxel"}
    pm, budget = written["points_model"], written["budget"]
    assert budget["bytes"] == 2 * 10**6
    assert budget["limit_numpoints"] == int((0.95 * budget["bytes"] - pm["base_bytes"]) // pm["bytes_per_voxel"])
    assert (tmp_path / "memory_timeline.png").is_file() and (tmp_path / "memory_trace.json").is_file()
    out = capsys.readouterr().out
    assert "whole model" in out and f"largest data.limit_numpoints for memory_budget 2MB" in out


def test_profile_mode_writes_nothing_on_other_ranks(tmp_path):
    report = run_profile_mode(_run(tmp_path, rank=1))
    assert report["modules"] and list(tmp_path.iterdir()) == []


def test_limit_numpoints_auto_resolves_from_the_budget():
    cfg = standin_main.config(["data.limit_numpoints=auto", "data.memory_budget=4MB"])
    limit, note = measure_limit(cfg, S.build_dataset(cfg.data, "train"), S.build_model, S.collate, S.plain_input,
                                torch.device("cpu"))
    assert f"-> {limit} voxels" in note
    # the training pass at the resolved count, measured directly, nearly fills the budget
    torch.manual_seed(0)
    model = S.build_model(cfg.model, 4, 3)
    params = static_bytes(model)
    momentum = params  # SGD with momentum keeps one buffer per parameter
    batch = {"feats": torch.randn(limit, 4)}
    used = params + momentum + measure_pass(model, batch, S.plain_input, "cpu")
    assert used == pytest.approx(4 * 10**6, rel=0.15)


def test_limit_numpoints_auto_needs_a_budget():
    with pytest.raises(ConfigError, match="needs data.memory_budget"):
        standin_main.config(["data.limit_numpoints=auto"])
    with pytest.raises(ConfigError, match="data.memory_budget: '24XB' is not a byte size"):
        standin_main.config(["data.memory_budget=24XB"])


def test_memory_hook_logs_the_saved_activations_of_each_step():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 2))
    storage = EventStorage()
    trainer = SimpleNamespace(model=model, device=torch.device("cpu"), iteration=0, storage=storage)
    hook = MemoryHook()
    hook.before_train(trainer)
    try:
        for step, n in enumerate((100, 300), start=1):
            model(torch.randn(n, 8)).sum().backward()
            trainer.iteration = storage.iteration = step
            hook.after_step(trainer)
    finally:
        hook.after_train(trainer)
    saved = [v for _, v in storage.history("memory/saved_mib")]
    # input (Linear 1), ReLU output (ReLU and Linear 2): 8 + 32 floats per row
    assert saved == [n * (8 + 32) * 4 / 2**20 for n in (100, 300)]
    assert storage.latest()["memory/rss_mib"][0] > 0
    assert storage.latest()["memory/rss_peak_mib"][0] >= storage.latest()["memory/rss_mib"][0] * 0.5
    model(torch.randn(10, 8)).sum().backward()  # the hook's saved-tensor hooks are gone after training
    assert hook.saved.total == 0


def test_profile_mode_out_of_memory_leaves_the_report_and_reraises(tmp_path):
    class Hungry(nn.Module):
        input_type = "sparse"

        def __init__(self, in_channels, num_classes):
            super().__init__()
            self.head = nn.Linear(in_channels, num_classes)

        def forward(self, x):
            return self.head(x) + torch.empty(1 << 46, dtype=torch.uint8)[:1]  # a real failed allocation

    run = _run(tmp_path)
    run.build_model = lambda cfg, cin, k: Hungry(cin, k)
    with pytest.raises(RuntimeError, match="can't allocate memory"):
        run_profile_mode(run)
    report = json.loads((tmp_path / "oom_report.json").read_text())
    assert report["voxels"] == 80 and report["requested_bytes"] == 1 << 46
    assert {r["module"] for r in report["by_module"]} >= {"(input)", "(parameters)"}


def test_two_gloo_processes_write_one_report(tmp_path):
    import subprocess
    import sys

    from tests.conftest import ROOT

    out = subprocess.run([sys.executable, str(ROOT / "tests" / "engine" / "standin_main.py"), "--mode", "profile",
                          "--output-dir", str(tmp_path), "--nproc", "2", "profile.warmup=0",
                          "profile.timeline_png=false"], cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.count("whole model") == 1  # one table, from rank 0
    assert (tmp_path / "log.txt").read_text().count("whole model") == 1  # and in the run's log
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.yaml", "log.txt", "memory_report.json",
                                                          "summary.json"]
    assert json.loads((tmp_path / "memory_report.json").read_text())["voxels"] == 80
