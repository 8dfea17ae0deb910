"""Peak memory of a model's forward and forward+backward, in total and per top-level module.

What is measured: bytes allocated by PyTorch's allocator on the measured device, relative to what was
allocated when the pass began (parameters, the input and optimizer state are therefore not in the
peaks; gradients are, since they are allocated during backward). Every pass starts from a fresh input,
so kernel maps are built inside it as they are in a training step.
- CUDA: torch.cuda.memory_allocated / max_memory_allocated, read (and the peak reset) in module hooks.
- CPU: torch.profiler with profile_memory=True records every CPU-allocator allocation and free with a
  timestamp; the live-bytes curve is replayed and cut at the module boundaries (marked with
  record_function from the hooks). Memory that bypasses the PyTorch allocator (a C++ extension's own
  malloc) is not seen. Reading the recorded allocations uses torch's profiler event tree
  (kineto_results.experimental_event_tree), the same source torch.profiler's memory timeline reads.

Per module: `peak` = highest live bytes while the module ran minus live bytes when it started;
`retained` = live bytes when it returned minus when it started (its output plus, in a training
forward, the activations autograd keeps for backward).
"""
import contextlib
import json
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

MIB = 2.0**20


def profile_memory(model: nn.Module, batch, device, out_dir, cfg=None, make_input=None) -> dict:
    """Measures `model` on `batch`, prints a table, writes JSON to `out_dir`, returns the same dict.

    Args:
        model: on `device`; its top-level children (entries of a ModuleList/ModuleDict child) are
            measured separately. Its train/eval mode and gradients are restored afterwards.
        batch: a collate dict (`feats`, `coords`) turned into a lib.sparse.SparseTensor for each
            pass, or a ready input (SparseTensor or Tensor on `device`) used as is, in which case
            caches the input carries persist from one pass to the next.
        device: torch.device or str.
        out_dir: folder for the JSON (cfg.json_name).
        cfg: ProfileConfig (warmup, inference, json_name); defaults when None.
        make_input: optional callable(batch, device) -> model input, used instead of the default.
    Returns:
        {"device", "method", "units": "bytes", "parameters_bytes", "inference": {...} or None,
         "train": {"forward_peak_bytes", "forward_retained_bytes", "step_peak_bytes",
                   "backward_peak_bytes", "modules": {name: {"peak_bytes", "retained_bytes"}}}}
    """
    from lib.config.schema_eval import ProfileConfig

    cfg = cfg or ProfileConfig()
    device = torch.device(device)
    build = _input_builder(batch, make_input)
    meter = _CudaMeter(device) if device.type == "cuda" else _CpuMeter()
    modules = _top_level(model)
    was_training = model.training
    hooks = []
    for name, module in modules:
        hooks.append(module.register_forward_pre_hook(lambda m, args, name=name: meter.enter(name)))
        hooks.append(module.register_forward_hook(lambda m, args, out, name=name: meter.exit(name)))
    try:
        meter.active = False
        for _ in range(cfg.warmup):
            _train_step(model, build(device), meter)
        model.zero_grad(set_to_none=True)
        meter.active = True
        inference = None
        if cfg.inference:
            model.eval()
            with torch.no_grad(), meter.session():
                x = build(device)
                meter.enter("forward")
                model(x)
                meter.exit("forward")
            inference = meter.result()
        model.train()
        with meter.session():
            _train_step(model, build(device), meter)
        train = meter.result()
    finally:
        for h in hooks:
            h.remove()
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    report = _report(model, device, meter, inference, train)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / cfg.json_name, "w") as f:
        json.dump(report, f, indent=1)
    print(format_profile(report))
    return report


def format_profile(report: dict) -> str:
    """Text table (MiB) of a profile_memory report."""
    inf = (report["inference"] or {}).get("modules", {})
    train = report["train"]["modules"]
    names = list(train) + [n for n in inf if n not in train]
    width = max([len(n) for n in names] + [24])
    head = f"{'module':<{width}}  {'infer peak':>10}  {'train fwd peak':>14}  {'kept for bwd':>12}"
    lines = [f"memory profile on {report['device']} (MiB, relative to the start of each pass)", head,
             "-" * len(head)]
    for n in names:
        i = inf.get(n, {}).get("peak_bytes")
        t = train.get(n, {})
        lines.append(f"{n:<{width}}  {_mib(i):>10}  {_mib(t.get('peak_bytes')):>14}  "
                     f"{_mib(t.get('retained_bytes')):>12}")
    lines.append("-" * len(head))
    tr = report["train"]
    infer_peak = report["inference"]["peak_bytes"] if report["inference"] else None
    lines.append(f"{'whole forward':<{width}}  {_mib(infer_peak):>10}  {_mib(tr['forward_peak_bytes']):>14}  "
                 f"{_mib(tr['forward_retained_bytes']):>12}")
    lines.append(f"forward+backward peak {_mib(tr['step_peak_bytes'])} MiB (backward alone "
                 f"{_mib(tr['backward_peak_bytes'])} MiB above its start); parameters "
                 f"{_mib(report['parameters_bytes'])} MiB")
    return "\n".join(lines)


def _mib(v) -> str:
    return "-" if v is None else f"{v / MIB:.2f}"


def _top_level(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Named top-level children; a ModuleList/ModuleDict is never called itself, so its entries stand in."""
    out = []
    for name, child in model.named_children():
        if isinstance(child, (nn.ModuleList, nn.ModuleDict)):
            out += [(f"{name}.{sub}", m) for sub, m in child.named_children()]
        else:
            out.append((name, child))
    return out


def _input_builder(batch, make_input):
    if make_input is not None:
        return lambda device: make_input(batch, device)
    if isinstance(batch, Mapping):
        def build(device):
            from lib.sparse import SparseTensor

            return SparseTensor(batch["feats"].to(device), batch["coords"].to(device))
        return build
    return lambda device: batch


def _train_step(model, x, meter) -> None:
    """Forward, a stand-in loss (sum of the logits: the same backward graph as a real loss), backward."""
    meter.enter("step")
    meter.enter("forward")
    out = model(x)
    meter.exit("forward")
    logits = out["logits"] if isinstance(out, Mapping) else out
    logits = getattr(logits, "feats", logits)  # a model may return a SparseTensor
    meter.enter("backward")
    logits.float().sum().backward()
    meter.exit("backward")
    meter.exit("step")


def _report(model, device, meter, inference, train) -> dict:
    phases = ("step", "forward", "backward")

    def modules(res):
        return {n: v for n, v in res.items() if n not in phases}

    return {
        "device": str(device),
        "method": meter.method,
        "units": "bytes",
        "parameters_bytes": sum(p.numel() * p.element_size() for p in model.parameters()),
        "inference": None if inference is None else {
            "peak_bytes": inference["forward"]["peak_bytes"], "modules": modules(inference)},
        "train": {
            "forward_peak_bytes": train["forward"]["peak_bytes"],
            "forward_retained_bytes": train["forward"]["retained_bytes"],
            "backward_peak_bytes": train["backward"]["peak_bytes"],
            "step_peak_bytes": train["step"]["peak_bytes"],
            "modules": modules(train),
        },
    }


def _merge(results: dict, name: str, peak: int, retained: int) -> None:
    """A module called twice in a pass keeps its highest peak and the sum of what it retained."""
    if name in results:
        results[name]["peak_bytes"] = max(results[name]["peak_bytes"], peak)
        results[name]["retained_bytes"] += retained
    else:
        results[name] = {"peak_bytes": peak, "retained_bytes": retained}


class _CudaMeter:
    """Ranges measured with the CUDA caching allocator's counters; nested ranges share the peak."""

    method = "torch.cuda.memory_allocated / max_memory_allocated, peak reset at every module boundary"

    def __init__(self, device: torch.device):
        self.device = device
        self.active = False
        self._open: list[list] = []  # [name, base, peak so far]
        self._results: dict = {}

    def session(self):
        self._results = {}
        torch.cuda.synchronize(self.device)
        torch.cuda.reset_peak_memory_stats(self.device)
        return contextlib.nullcontext()

    def _fold(self) -> None:
        peak = torch.cuda.max_memory_allocated(self.device)
        for entry in self._open:
            entry[2] = max(entry[2], peak)
        torch.cuda.reset_peak_memory_stats(self.device)

    def enter(self, name: str) -> None:
        if self.active:
            self._fold()
            now = torch.cuda.memory_allocated(self.device)
            self._open.append([name, now, now])

    def exit(self, name: str) -> None:
        if self.active:
            self._fold()
            _, base, peak = self._open.pop()
            _merge(self._results, name, peak - base, torch.cuda.memory_allocated(self.device) - base)

    def result(self) -> dict:
        return self._results


class _CpuMeter:
    """Ranges marked with record_function, measured afterwards from the profiler's allocation events."""

    method = ("torch.profiler profile_memory=True: CPU-allocator allocations and frees replayed into a "
              "live-bytes curve, cut at module boundaries marked with record_function")
    PREFIX = "voxseg_mem::"

    def __init__(self):
        self.active = False
        self._ranges: list = []
        self._prof = None

    def session(self):
        from torch.profiler import ProfilerActivity, profile

        self._prof = profile(activities=[ProfilerActivity.CPU], profile_memory=True)
        return self._prof

    def enter(self, name: str) -> None:
        if self.active:
            rf = torch.profiler.record_function(self.PREFIX + name)
            rf.__enter__()
            self._ranges.append(rf)

    def exit(self, name: str) -> None:
        if self.active:
            self._ranges.pop().__exit__(None, None, None)

    def result(self) -> dict:
        from torch._C._profiler import _EventType

        allocations, ranges = [], []
        stack = list(self._prof.profiler.kineto_results.experimental_event_tree())
        while stack:
            event = stack.pop()
            stack.extend(event.children)
            if event.tag == _EventType.Allocation and event.extra_fields.device.type == "cpu":
                allocations.append((event.start_time_ns, event.extra_fields.alloc_size))
            elif event.name.startswith(self.PREFIX):
                ranges.append((event.start_time_ns, event.end_time_ns, event.name[len(self.PREFIX):]))
        allocations.sort()
        times = torch.tensor([t for t, _ in allocations], dtype=torch.int64)
        live = torch.cumsum(torch.tensor([0] + [s for _, s in allocations], dtype=torch.int64), 0)
        results: dict = {}
        for start, end, name in sorted(ranges):
            # live[i] = bytes live after the first i allocation events
            first = int(torch.searchsorted(times, start, right=False))
            last = int(torch.searchsorted(times, end, right=True))
            base = int(live[first])
            peak = int(live[first:last + 1].max()) - base
            _merge(results, name, peak, int(live[last]) - base)
        return results
