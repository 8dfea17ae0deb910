"""Memory and time at marks placed during a pass, on CUDA or on the CPU.

- CUDA: at every mark the stream is synchronised and torch.cuda.memory_allocated (live bytes) and
  max_memory_allocated (the highest since the previous mark; the peak is reset at each mark) are read.
- CPU: the PyTorch allocator keeps no counters on the CPU, so torch.profiler(profile_memory=True)
  records every CPU-allocator allocation and free with a timestamp; afterwards the live-bytes curve is
  replayed from those events (the torch profiler's event tree, kineto_results.experimental_event_tree,
  which is also what torch.profiler's own memory timeline reads) and read at the marks, each placed as
  an empty record_function range so that it shares the allocation events' clock. Memory allocated
  outside the PyTorch allocator (a C++ extension's own malloc, numpy) is not seen, and the profiler
  slows the pass, so CPU times are inflated.
All figures are relative to the first mark ("begin"): parameters and anything else live before the
pass are not in them.
"""
import time

import numpy as np
import torch

PREFIX = "voxseg_mark::"


class MemoryTimeline:
    """Context manager; `mark(label)` -> index. After the block, per mark i: `times[i]` (ns since begin),
    `live[i]` (bytes live at the mark), `peak[i]` (highest live bytes since mark i-1), and `curve`
    ([(ns, live bytes)], every allocation event on CPU, the marks on CUDA) for plots."""

    def __init__(self, device):
        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"
        self.labels = []
        self._raw = []  # CUDA: (ns, live, peak) per mark
        self._prof = None
        self.times = self.live = self.peak = None
        self.curve = []

    @property
    def method(self) -> str:
        if self.cuda:
            return "torch.cuda.memory_allocated / max_memory_allocated read at module boundaries"
        return "torch.profiler profile_memory=True: CPU-allocator events replayed into a live-bytes curve"

    def mark(self, label: str) -> int:
        index = len(self.labels)
        self.labels.append(label)
        if self.cuda:
            torch.cuda.synchronize(self.device)
            self._raw.append((time.perf_counter_ns(), torch.cuda.memory_allocated(self.device),
                              torch.cuda.max_memory_allocated(self.device)))
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            with torch.profiler.record_function(f"{PREFIX}{index}"):
                pass
        return index

    def __enter__(self):
        if self.cuda:
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            from torch.profiler import ProfilerActivity, profile

            self._prof = profile(activities=[ProfilerActivity.CPU], profile_memory=True)
            self._prof.__enter__()
        self.mark("begin")
        return self

    def __exit__(self, *exc):
        self.mark("end")
        if self.cuda:
            raw = np.array(self._raw, dtype=np.int64)
            t, live, peak = raw[:, 0], raw[:, 1], raw[:, 2]
            self.curve = list(zip((t - t[0]).tolist(), (live - live[0]).tolist()))
        else:
            self._prof.__exit__(*exc)
            t, live, peak = self._replay()
        self.times = (t - t[0]).tolist()
        self.live = (live - live[0]).tolist()
        self.peak = (np.maximum(peak, live) - live[0]).tolist()
        return False

    def _replay(self):
        from torch._C._profiler import _EventType

        allocs, marks = [], {}
        stack = list(self._prof.profiler.kineto_results.experimental_event_tree())
        while stack:
            event = stack.pop()
            stack.extend(event.children)
            if event.tag == _EventType.Allocation and event.extra_fields.device.type == "cpu":
                allocs.append((event.start_time_ns, event.extra_fields.alloc_size))
            elif event.name.startswith(PREFIX):
                marks[int(event.name[len(PREFIX):])] = event.start_time_ns
        allocs.sort()
        at = np.array([a[0] for a in allocs], dtype=np.int64)
        alive = np.cumsum(np.array([a[1] for a in allocs], dtype=np.int64))  # live after each event
        mt = np.array([marks[i] for i in range(len(self.labels))], dtype=np.int64)
        upto = np.searchsorted(at, mt, side="right")  # events at or before each mark
        live = np.where(upto > 0, alive[np.maximum(upto - 1, 0)], 0)
        peak = live.copy()
        for i in range(1, len(mt)):
            if upto[i] > upto[i - 1]:
                peak[i] = max(peak[i], alive[upto[i - 1]:upto[i]].max())
        keep = (at >= mt[0]) & (at <= mt[-1])
        self.curve = list(zip((at[keep] - mt[0]).tolist(), (alive[keep] - live[0]).tolist()))
        return mt, live, peak

    def span_peak(self, first: int, last: int) -> int:
        """Highest live bytes between marks `first` and `last`, above the live bytes at `first`."""
        return max(self.peak[first + 1:last + 1] + [self.live[first]]) - self.live[first]

    def span_ms(self, first: int, last: int) -> float:
        return (self.times[last] - self.times[first]) / 1e6


def peak_bytes(fn, device="cpu") -> int:
    """Peak bytes allocated by one call of `fn()` above what was live when it began (the method of
    MemoryTimeline on that device). Benchmarks and memory tests use this one meter."""
    with MemoryTimeline(device) as timeline:
        fn()
    return int(max(timeline.peak))


def median_seconds(fn, device, repeats: int) -> float:
    """Median wall time in seconds of `repeats` calls of fn() (warm it up first): CUDA events around
    each call on a CUDA device, time.perf_counter elsewhere."""
    import statistics

    device = torch.device(device)
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize(device)
            times.append(start.elapsed_time(end) / 1000.0)
        else:
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return statistics.median(times)
