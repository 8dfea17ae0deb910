"""The CUDA branch of the memory timeline, run on the CPU against a scripted allocator (the counters
torch.cuda would report), and the real thing where a GPU is present."""
import pytest
import torch
from torch import nn

from lib.profiler import MemoryProfiler
from lib.profiler.meter import MemoryTimeline


class FakeAllocator:
    """memory_allocated / max_memory_allocated / reset_peak_memory_stats of a scripted device."""

    def __init__(self):
        self.live = self.peak = 1000  # something already allocated before the block (parameters)

    def alloc(self, n):
        self.live += n
        self.peak = max(self.peak, self.live)

    def free(self, n):
        self.live -= n

    def install(self, monkeypatch):
        monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: None)
        monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: self.live)
        monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device=None: self.peak)
        monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda device=None: setattr(self, "peak", self.live))


def test_cuda_timeline_folds_the_peaks_between_marks(monkeypatch):
    fake = FakeAllocator()
    fake.install(monkeypatch)
    with MemoryTimeline("cuda") as tl:
        fake.alloc(500)
        fake.free(300)
        a = tl.mark("a")  # live 200, peak since begin 500
        fake.alloc(100)
        fake.free(100)
        b = tl.mark("b")  # live 200, peak since a 300
        fake.alloc(1000)
        fake.free(1100)
        c = tl.mark("c")  # live 100, peak since b 1200
    assert tl.live[a] == 200 and tl.live[c] == 100
    assert tl.span_peak(0, a) == 500
    assert tl.span_peak(a, b) == 100  # 300 above the 200 live at a
    assert tl.span_peak(b, c) == 1000
    assert tl.span_peak(0, c) == 1200
    assert "cuda" in tl.method


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_profiler_on_cuda_sees_the_saved_activations():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU()).cuda()
    x = torch.randn(2, 3, 64, 64, device="cuda")
    with MemoryProfiler(model) as prof:
        model(x).sum().backward()
    r = prof.report()
    act = 2 * 8 * 64 * 64 * 4
    rows = {m["name"]: m for m in r["modules"]}
    assert rows["2"]["fwd_saved_bytes"] == act
    assert rows["1"]["fwd_saved_bytes"] == act + 2 * 8 * 4
    assert rows["2"]["fwd_peak_bytes"] >= act and r["step_peak_bytes"] >= 2 * act
