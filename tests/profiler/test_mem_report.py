"""MemoryProfiler on CPU: saved-activation bytes against sizes computed by hand, rows against the
whole-model figure and against the allocator's own count of what a forward leaves alive."""
import json

import pytest
import torch
from torch import nn

from lib.profiler import MemoryProfiler, format_report
from lib.profiler.scope import MODEL_ROW, select_modules
from lib.profiler.timeline import save_chrome_trace, save_png

B, CIN, C, H, W = 2, 3, 8, 32, 32
F32 = 4


def _conv_bn_relu():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(CIN, C, 3, padding=1), nn.BatchNorm2d(C), nn.ReLU())


def _profile(model, x, depth=1):
    with MemoryProfiler(model, "cpu", depth=depth) as prof:
        model(x).sum().backward()
    return prof, prof.report()


def _row(report, name):
    return next(m for m in report["modules"] if m["name"] == name)


def test_saved_bytes_of_conv_bn_relu_equal_their_analytic_sizes():
    model, x = _conv_bn_relu(), torch.randn(B, CIN, H, W)
    _, r = _profile(model, x)
    # conv keeps its input for the weight gradient (its weight is a parameter: not counted)
    assert _row(r, "0")["fwd_saved_bytes"] == B * CIN * H * W * F32
    # batch norm keeps its input and the batch mean and inverse std per channel (running stats are buffers)
    assert _row(r, "1")["fwd_saved_bytes"] == B * C * H * W * F32 + 2 * C * F32
    # ReLU keeps its output (the mask of its gradient)
    assert _row(r, "2")["fwd_saved_bytes"] == B * C * H * W * F32
    assert r["saved_bytes"] == sum(m["fwd_saved_bytes"] for m in r["modules"])
    assert r["voxels"] == B and r["passes"] == 1
    assert all(m["calls"] == 1 and m["fwd_ms"] >= 0 and m["bwd_ms"] >= 0 for m in r["modules"])


def test_whole_model_saved_bytes_match_the_allocator():
    """What the training forward leaves alive (allocator events) is what autograd saved, less the input
    (allocated before the block): the conv output (kept by BN), BN's statistics, the ReLU output."""
    model, x = _conv_bn_relu(), torch.randn(B, CIN, H, W)
    prof, r = _profile(model, x)
    tl = prof.timeline
    fwd_end = tl.labels.index(f"fwd<{MODEL_ROW}")
    assert tl.live[fwd_end] == pytest.approx(r["saved_bytes"] - x.numel() * F32, rel=0.01)
    # a module's forward peak holds at least its output; the step peak at least what forward kept
    assert _row(r, "1")["fwd_peak_bytes"] >= B * C * H * W * F32
    assert r["step_peak_bytes"] >= tl.live[fwd_end]
    assert r["total_peak_bytes"] == r["step_peak_bytes"] + r["parameters_bytes"]
    floats = [t for t in [*model.parameters(), *model.buffers()] if t.is_floating_point()]
    assert r["parameters_bytes"] == sum(t.numel() * F32 for t in floats) + 8  # + BN's int64 batch counter


def test_depth_rows_cover_the_model_and_a_storage_counts_once():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(CIN, C, 3, padding=1), nn.ReLU(),
                          nn.Sequential(nn.Conv2d(C, C, 3, padding=1), nn.ReLU()))
    x = torch.randn(B, CIN, H, W)
    assert [n for n, _ in select_modules(model, 2)] == ["0", "1", "2.0", "2.1"]
    _, top = _profile(model, x, depth=1)
    _, deep = _profile(model, x, depth=2)
    rows = {m["name"]: m["fwd_saved_bytes"] for m in deep["modules"]}
    act = B * C * H * W * F32
    # the inner conv saves the first ReLU's output, already counted by that ReLU
    assert rows == {"0": B * CIN * H * W * F32, "1": act, "2.0": 0, "2.1": act}
    assert top["saved_bytes"] == deep["saved_bytes"] == sum(rows.values())
    assert _row(top, "2")["fwd_saved_bytes"] == act


def test_ops_outside_reported_modules_form_the_model_row():
    class TwoBranch(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(16, 16), nn.Linear(16, 16)

        def forward(self, x):
            return torch.sigmoid(self.a(x) * self.b(x))  # mul and sigmoid run in the model's own forward

    model, x = TwoBranch(), torch.randn(64, 16)
    _, r = _profile(model, x)
    rows = {m["name"]: m["fwd_saved_bytes"] for m in r["modules"]}
    out = 64 * 16 * F32
    assert rows["a"] == out  # the input, saved by a (b's saved input is the same storage)
    assert rows["b"] == 0
    assert rows[MODEL_ROW] == 3 * out  # mul keeps both factors, sigmoid its output
    assert r["saved_bytes"] == sum(rows.values())


def test_several_passes_report_per_pass_figures():
    model, x = _conv_bn_relu(), torch.randn(B, CIN, H, W)
    with MemoryProfiler(model, "cpu") as prof:
        for _ in range(3):
            model(x).sum().backward()
    r = prof.report()
    assert r["passes"] == 3
    assert {m["name"]: m["calls"] for m in r["modules"]} == {"0": 3, "1": 3, "2": 3}
    assert _row(r, "2")["fwd_saved_bytes"] == B * C * H * W * F32


def test_sparse_model_rows_add_up(tmp_path):
    from lib.sparse import SparseTensor
    from lib.sparse import nn as snn

    torch.manual_seed(0)
    n, extent = 3000, 24
    cells = torch.randperm(extent ** 3)[:n]
    coords = torch.stack([torch.zeros_like(cells), cells // extent ** 2, (cells // extent) % extent,
                          cells % extent], dim=1).int()
    model = nn.Sequential(snn.SubMConv3d(3, 16), snn.BatchNorm(16), snn.ReLU(), snn.SubMConv3d(16, 5))
    x = SparseTensor(torch.randn(n, 3), coords, engine="torch")
    with MemoryProfiler(model, "cpu") as prof:
        model(x).feats.sum().backward()
    r = prof.report()
    assert r["voxels"] == n
    assert r["saved_bytes"] == sum(m["fwd_saved_bytes"] for m in r["modules"])
    assert _row(r, "1")["fwd_saved_bytes"] >= n * 16 * F32  # BN keeps the conv output
    assert _row(r, "2")["fwd_saved_bytes"] == n * 16 * F32  # ReLU keeps its output
    assert all(m["bwd_peak_bytes"] is not None for m in r["modules"])
    text = format_report(r)
    assert "whole model" in text and "top kept for backward" in text
    png = save_png(prof, tmp_path / "t.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    trace = json.loads(save_chrome_trace(prof, tmp_path / "t.json").read_text())
    spans = [e for e in trace["traceEvents"] if e["ph"] == "X"]
    assert {e["name"] for e in spans} >= {"0", "1", "2", "3"}
    assert all(e["dur"] >= 0 for e in spans)


def test_a_loss_outside_the_forward_has_its_own_row():
    model, x = _conv_bn_relu(), torch.randn(B, CIN, H, W)
    labels = torch.randint(0, C, (B, H, W))
    with MemoryProfiler(model, "cpu") as prof:
        nn.functional.cross_entropy(model(x), labels).backward()
    r = prof.report()
    # log_softmax keeps its output; nll_loss keeps no float tensor of that size
    assert _row(r, "(outside forward)")["fwd_saved_bytes"] >= B * C * H * W * F32
    assert r["saved_bytes"] == sum(m["fwd_saved_bytes"] for m in r["modules"])
    assert _row(r, "2")["fwd_saved_bytes"] == B * C * H * W * F32
