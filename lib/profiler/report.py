"""Where the bytes of one forward/backward go, per module: `MemoryProfiler` around any user code.

    with MemoryProfiler(model, depth=1) as prof:
        model(x).sum().backward()
    report = prof.report()          # the memory_report.json layout (below)
    print(format_report(report))

Per reported module (lib.profiler.scope.select_modules at `depth`; top-level children by default):
- fwd_saved_bytes: storage bytes of the tensors autograd saved for backward while the module's forward
  ran (saved-tensor hooks; each storage counted once, for the first module that saved it; parameters
  and buffers excluded; a module's saved input counts, it is what its backward keeps). Ops run by a
  parent's forward outside every reported module are the row "(model)", so the rows add up to
  `saved_bytes`, the whole model's figure; what is saved outside the model's forward (a loss inside
  the block) is the row "(outside forward)".
- fwd_peak_bytes / bwd_peak_bytes: highest live bytes during the module's forward / backward above the
  live bytes when it began (lib.profiler.meter for how they are read on CUDA and CPU).
  The backward of a module runs from the moment the gradient of its output is ready to the moment the
  gradient of its input is (tensor hooks); a module whose input needs no gradient (the stem) ends with
  the backward pass. Modules whose input feeds several consumers (U-Net skips) get approximate spans.
- fwd_ms / bwd_ms: wall time of those spans, summed over a pass's calls (CPU times include profiler
  overhead). With several passes in the block, saved bytes and times are per pass (means) and peaks
  the highest seen.
Whole pass: step_peak_bytes is the peak above the start of the block; total_peak_bytes adds the
parameters and buffers (which live all along): the figure a device must hold for this batch.
"""
import torch
from torch import nn

from lib.profiler.meter import MemoryTimeline
from lib.profiler.saved import SavedTensorTracker
from lib.profiler.scope import MODEL_ROW, OUTSIDE_ROW, ModuleScope, rows_of, select_modules, tensors_in
from lib.units import mib


def static_bytes(model: nn.Module) -> int:
    """Bytes of the parameters and buffers of `model`."""
    return sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])


class MemoryProfiler:
    """Context manager measuring the forward/backward passes of `model` run inside it.

    Args:
        model: the network; its forward may be called any number of times inside the block.
        device: where it runs (default: its parameters' device).
        depth: module depth of the report rows (1 = top-level children).
    """

    def __init__(self, model: nn.Module, device=None, depth: int = 1):
        self.model, self.depth = model, depth
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        self.rows = select_modules(model, depth)
        names = {m: n for n, m in self.rows}
        names[model] = MODEL_ROW
        self.timeline = MemoryTimeline(self.device)
        self.saved = SavedTensorTracker(owner=lambda: self.scope.current() or OUTSIDE_ROW,
                                        exclude=[*model.parameters(), *model.buffers()])
        self.scope = ModuleScope(names, self._enter, self._exit, self._root)
        self.voxels, self.passes = 0, 0
        self._calls, self._open = [], []
        self._bwd_done = []  # marks placed when a backward pass ends
        self._callback_queued = False

    # forward hooks -----------------------------------------------------------------------------
    def _root(self, args):
        self.voxels = rows_of(args)
        self.passes += 1
        self.saved.new_pass()

    def _enter(self, name, module, args):
        call = {"name": name, "fwd0": self.timeline.mark(f"fwd>{name}")}
        self._open.append(call)
        for t in tensors_in(args):
            if t.requires_grad:
                t.register_hook(lambda grad, call=call: self._bwd_end(call))

    def _exit(self, name, module, args, output):
        call = self._open.pop()
        call["fwd1"] = self.timeline.mark(f"fwd<{name}")
        self._calls.append(call)
        for t in tensors_in(output):
            if t.requires_grad:
                t.register_hook(lambda grad, call=call: self._bwd_begin(call))

    # backward hooks ----------------------------------------------------------------------------
    def _bwd_begin(self, call):
        if "bwd0" not in call:
            call["bwd0"] = self.timeline.mark(f"bwd>{call['name']}")
        if not self._callback_queued:
            self._callback_queued = True
            torch.autograd.Variable._execution_engine.queue_callback(self._backward_done)

    def _bwd_end(self, call):
        call["bwd1"] = self.timeline.mark(f"bwd<{call['name']}")

    def _backward_done(self):
        self._bwd_done.append(self.timeline.mark("backward done"))
        self._callback_queued = False

    def __enter__(self):
        self.timeline.__enter__()
        self.scope.__enter__()
        self.saved.__enter__()
        return self

    def __exit__(self, *exc):
        self.saved.__exit__(*exc)
        self.scope.__exit__(*exc)
        self.timeline.__exit__(*exc)
        return False

    # results -----------------------------------------------------------------------------------
    def spans(self) -> list:
        """[(name, "forward"|"backward", first mark, last mark)] of every call, the model's own included."""
        out = []
        for call in self._calls:
            out.append((call["name"], "forward", call["fwd0"], call["fwd1"]))
            if "bwd0" in call:
                end = call.get("bwd1")
                if end is None:  # the input needs no gradient: the module's backward ends with the pass
                    end = next((m for m in self._bwd_done if m > call["bwd0"]), len(self.timeline.labels) - 1)
                elif end < call["bwd0"]:  # the output is the input (an identity): nothing runs
                    end = call["bwd0"]
                out.append((call["name"], "backward", call["bwd0"], end))
        return out

    def report(self) -> dict:
        """The memory_report.json layout (without points_model, which lib.profiler.fit adds)."""
        tl = self.timeline
        rows = {name: _empty_row(name) for name, _ in self.rows}
        whole = {"forward": [], "backward": []}
        passes = max(1, self.passes)
        for name, phase, first, last in self.spans():
            if name == MODEL_ROW:
                whole[phase].append((first, last))
                continue
            row, key = rows[name], {"forward": "fwd", "backward": "bwd"}[phase]
            row["calls"] += phase == "forward"
            row[f"{key}_peak_bytes"] = max(row[f"{key}_peak_bytes"] or 0, tl.span_peak(first, last))
            row[f"{key}_ms"] = round((row[f"{key}_ms"] or 0.0) + tl.span_ms(first, last) / passes, 3)
        for name, saved in self.saved.bytes.items():
            rows.setdefault(name, _empty_row(name))["fwd_saved_bytes"] = saved // passes
        end = len(tl.labels) - 1
        step_peak = tl.span_peak(0, end)

        def phase_figures(spans):
            if not spans:
                return None, None
            return (max(tl.span_peak(a, b) for a, b in spans),
                    round(sum(tl.span_ms(a, b) for a, b in spans) / passes, 3))

        fwd_peak, fwd_ms = phase_figures(whole["forward"])
        bwd_peak, bwd_ms = phase_figures(whole["backward"])
        return {"device": str(self.device), "method": tl.method, "depth": self.depth, "voxels": self.voxels,
                "parameters_bytes": static_bytes(self.model), "passes": passes,
                "saved_bytes": sum(r["fwd_saved_bytes"] for r in rows.values()),
                "step_peak_bytes": step_peak, "total_peak_bytes": step_peak + static_bytes(self.model),
                "forward_peak_bytes": fwd_peak, "backward_peak_bytes": bwd_peak,
                "forward_ms": fwd_ms, "backward_ms": bwd_ms,
                "modules": [r for r in rows.values() if r["calls"] or r["fwd_saved_bytes"]]}


def _empty_row(name: str) -> dict:
    """A report row; `calls` counts the module's forward calls in the block."""
    return {"name": name, "fwd_saved_bytes": 0, "fwd_peak_bytes": None, "bwd_peak_bytes": None,
            "fwd_ms": None, "bwd_ms": None, "calls": 0}


def format_report(report: dict, top: int = 5) -> str:
    """Console table (MiB, ms) of a report, then the top offenders."""
    mods = report["modules"]
    width = max([len(m["name"]) for m in mods] + [16])
    head = (f"{'module':<{width}} {'saved MiB':>10} {'fwd peak':>10} {'bwd peak':>10} {'fwd ms':>9} "
            f"{'bwd ms':>9}")
    lines = [f"memory report on {report['device']}, {report['voxels']} voxels (MiB above the start of "
             f"each span; {report['method']})", head, "-" * len(head)]

    def ms(v):
        return "-" if v is None else f"{v:.1f}"

    for m in mods:
        lines.append(f"{m['name']:<{width}} {mib(m['fwd_saved_bytes']):>10} {mib(m['fwd_peak_bytes']):>10} "
                     f"{mib(m['bwd_peak_bytes']):>10} {ms(m['fwd_ms']):>9} {ms(m['bwd_ms']):>9}")
    lines.append("-" * len(head))
    lines.append(f"{'whole model':<{width}} {mib(report['saved_bytes']):>10} "
                 f"{mib(report['forward_peak_bytes']):>10} {mib(report['backward_peak_bytes']):>10} "
                 f"{ms(report['forward_ms']):>9} {ms(report['backward_ms']):>9}")
    lines.append(f"forward+backward peak {mib(report['step_peak_bytes'])} MiB above the start; with parameters "
                 f"and buffers {mib(report['total_peak_bytes'])} MiB")
    for key, what in (("fwd_saved_bytes", "kept for backward"), ("bwd_peak_bytes", "backward peak")):
        ranked = sorted((m for m in mods if m[key]), key=lambda m: -m[key])[:top]
        if ranked:
            lines.append(f"top {what}: " + ", ".join(f"{m['name']} {mib(m[key])}" for m in ranked))
    pm = report.get("points_model")
    if pm:
        lines.append(f"points model: {mib(pm['base_bytes'])} MiB + {pm['bytes_per_voxel'] / 1024:.2f} KiB "
                     f"per voxel")
    return "\n".join(lines)
