"""Memory over time with the module spans under it: a PNG (matplotlib) and a Chrome trace (JSON that
chrome://tracing and https://ui.perfetto.dev open)."""
import json
from pathlib import Path

from lib.units import MIB


def _span_times(prof):
    """[(name, phase, start ms, end ms)] of a finished MemoryProfiler."""
    t = prof.timeline.times
    return [(name, phase, t[a] / 1e6, t[b] / 1e6) for name, phase, a, b in prof.spans()]


def save_png(prof, path, title: str = "") -> Path:
    """Live bytes (MiB above the start) against time (ms); forward spans in blue and backward spans in
    orange, one lane per module, under the curve."""
    try:
        import matplotlib
    except ImportError:
        raise ImportError("the memory timeline PNG needs matplotlib: pip install matplotlib") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    spans = _span_times(prof)
    lanes = list(dict.fromkeys(name for name, *_ in spans))
    fig, (top, bottom) = plt.subplots(2, 1, sharex=True, figsize=(11, 4 + 0.22 * len(lanes)),
                                      gridspec_kw={"height_ratios": [3, max(1, len(lanes) * 0.25)]})
    curve = prof.timeline.curve
    top.step([c[0] / 1e6 for c in curve], [c[1] / MIB for c in curve], where="post", lw=0.8)
    top.set_ylabel("MiB above start")
    top.set_title(title or f"memory on {prof.device}")
    top.grid(alpha=0.3)
    colours = {"forward": "tab:blue", "backward": "tab:orange"}
    for name, phase, start, end in spans:
        lane = lanes.index(name)
        bottom.barh(lane, max(end - start, 1e-3), left=start, color=colours[phase], height=0.8)
    bottom.set_yticks(range(len(lanes)), lanes, fontsize=7)
    bottom.invert_yaxis()
    bottom.set_xlabel("ms (forward blue, backward orange)")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def save_chrome_trace(prof, path) -> Path:
    """Module spans as complete events and live memory as a counter track (times in microseconds)."""
    events = [{"name": name, "cat": phase, "ph": "X", "ts": start * 1e3, "dur": (end - start) * 1e3,
               "pid": 0, "tid": 0 if phase == "forward" else 1}
              for name, phase, start, end in _span_times(prof)]
    events += [{"name": "memory", "ph": "C", "ts": t / 1e3, "pid": 0, "args": {"MiB": live / MIB}}
               for t, live in prof.timeline.curve]
    path = Path(path)
    path.write_text(json.dumps({"traceEvents": events, "displayTimeUnit": "ms"}))
    return path
