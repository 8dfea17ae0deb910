"""The memory profiler on CPU: its numbers against tensor sizes known in advance."""
import json

import pytest
import torch
from torch import nn

from lib.config.schema_eval import ProfileConfig
from lib.profiler import format_profile, profile_memory

N, CIN, HIDDEN, K = 4096, 64, 512, 20
F32 = 4


def _dense_report(tmp_path, **kw):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(CIN, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, K))
    x = torch.randn(N, CIN)
    return model, profile_memory(model, x, "cpu", tmp_path, **kw)


def test_dense_model_peaks_match_the_activation_sizes(tmp_path):
    hidden, logits = N * HIDDEN * F32, N * K * F32  # 8 MiB and 320 KiB
    model, r = _dense_report(tmp_path)
    close = dict(rel=0.05)
    inf, train = r["inference"], r["train"]
    # each module's peak is at least its output, and nothing much besides
    assert inf["modules"]["0"]["peak_bytes"] == pytest.approx(hidden, **close)
    assert inf["modules"]["1"]["peak_bytes"] == pytest.approx(hidden, **close)
    assert inf["modules"]["2"]["peak_bytes"] == pytest.approx(logits, **close)
    # no-grad forward: the linear output and the ReLU output are both alive inside nn.Sequential
    assert inf["peak_bytes"] == pytest.approx(2 * hidden, **close)
    # training forward keeps the ReLU output (for ReLU's and the 2nd Linear's backward) and the logits;
    # the 1st Linear's output is not needed by backward and is freed
    assert train["forward_retained_bytes"] == pytest.approx(hidden + logits, **close)
    # backward holds the gradient of the ReLU output and of the Linear output at once, plus what forward kept
    assert train["step_peak_bytes"] >= train["forward_retained_bytes"] + 2 * hidden
    slack = 4 * logits + 4 * r["parameters_bytes"]  # logit gradients, parameter gradients, matmul temporaries
    assert train["step_peak_bytes"] <= train["forward_retained_bytes"] + 2 * hidden + slack
    assert r["parameters_bytes"] == sum(p.numel() for p in model.parameters()) * F32
    # the model is left as found: no gradients, training mode restored
    assert all(p.grad is None for p in model.parameters()) and model.training


def test_json_written_and_table_printed(tmp_path, capsys):
    _, r = _dense_report(tmp_path, cfg=ProfileConfig(warmup=0, inference=False, json_name="mem.json"))
    assert json.loads((tmp_path / "mem.json").read_text()) == r
    assert r["inference"] is None and r["device"] == "cpu" and "profile_memory" in r["method"]
    printed = capsys.readouterr().out
    assert printed.strip() == format_profile(r).strip()
    assert "forward+backward peak" in printed


def test_sparse_model_from_a_collated_batch(tmp_path):
    from lib.sparse import nn as snn

    torch.manual_seed(0)
    n, extent = 20000, 64
    cells = torch.randperm(extent ** 3)[:n]
    coords = torch.stack([torch.zeros_like(cells), cells // extent ** 2, (cells // extent) % extent,
                          cells % extent], dim=1).int()
    batch = {"coords": coords, "feats": torch.randn(n, 3)}
    model = nn.Sequential(snn.SubMConv3d(3, 32), snn.BatchNorm(32), snn.ReLU(), snn.SubMConv3d(32, 5))
    r = profile_memory(model, batch, "cpu", tmp_path)
    mods = r["train"]["modules"]
    assert list(mods) == ["0", "1", "2", "3"]
    width32, width5 = n * 32 * F32, n * 5 * F32
    assert mods["0"]["retained_bytes"] >= width32  # conv output (+ the kernel map it builds)
    assert mods["1"]["retained_bytes"] >= width32  # BN output
    assert mods["3"]["retained_bytes"] >= width5
    for m in mods.values():
        assert 0 <= m["retained_bytes"] <= m["peak_bytes"] < 50 * width32
    assert r["train"]["forward_retained_bytes"] >= 2 * width32 + width5
    assert r["train"]["step_peak_bytes"] >= r["train"]["forward_peak_bytes"] > 0
    assert r["inference"]["peak_bytes"] <= r["train"]["forward_peak_bytes"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device for the CUDA meter")
def test_cuda_meter_sees_the_activation_sizes(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(CIN, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, K)).cuda()
    r = profile_memory(model, torch.randn(N, CIN, device="cuda"), "cuda", tmp_path)
    hidden = N * HIDDEN * F32
    assert r["inference"]["modules"]["0"]["peak_bytes"] >= hidden
    assert r["train"]["forward_retained_bytes"] >= hidden
    assert r["train"]["step_peak_bytes"] >= r["train"]["forward_retained_bytes"] + hidden
