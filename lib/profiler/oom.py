"""What filled the memory when a block ran out of it: `oom_guard`.

    with oom_guard(run_dir, rank=rank) as guard:
        model = build(...)
        guard.watch(model)          # names the tensors each top-level module makes
        train(model)

When the block raises an out-of-memory error (torch.OutOfMemoryError on CUDA; MemoryError, or the
RuntimeError "DefaultCPUAllocator: can't allocate memory" on the CPU) the guard writes
<run_dir>/oom_report.json (oom_report_rank<r>.json on other ranks) and logs its tables, then lets the
original error propagate unchanged. While open it tags every tensor a watched module returns and
every tensor autograd saves with the module that made it (weak references: nothing is kept alive),
and notes the voxel count of each outermost forward. At the failure the live tensors are those held
by Python objects (gc) and by the autograd graph, each storage counted once; those no module made
are named by what holds them (`held_by`: gradients, optimizer state, the sparse coordinates and
kernel maps, other modules' weights) before falling back to "(untracked)".

The suggested limit_numpoints: with a points model and a budget, the largest count fitting the
budget; otherwise the batch's voxels scaled by live activations / (live activations + the failed
request), less 10 % (memory is taken as linear in the voxels); half the batch when the request's
size is unknown.
"""
import gc
import json
import logging
import re
from collections import defaultdict
from pathlib import Path

import torch
from torch.utils.weak import WeakIdKeyDictionary

from lib.profiler.saved import SavedTensorTracker, storage_bytes, storage_key
from lib.profiler.scope import MODEL_ROW, OUTSIDE_ROW, ModuleScope, rows_of, select_modules, tensors_in
from lib.units import mib

log = logging.getLogger("voxseg")
_REQUEST = re.compile(r"[Tt]ried to allocate ([0-9.]+) ?(bytes|[KMGT]iB)")
_SCALE = {"bytes": 1, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "TiB": 2**40}


def is_oom(exc) -> bool:
    """True for CUDA and CPU out-of-memory errors."""
    return (isinstance(exc, (torch.OutOfMemoryError, MemoryError))
            or (isinstance(exc, RuntimeError) and "can't allocate memory" in str(exc)))


def requested_bytes(message: str):
    """The size of the allocation that failed, from the error text; None if it does not say."""
    match = _REQUEST.search(message)
    return int(float(match.group(1)) * _SCALE[match.group(2)]) if match else None


class oom_guard:
    """Context manager (module docstring). Args: run_dir, rank, model (or later `watch(model)`),
    depth of the module names, points_model + budget_bytes for the suggestion, top rows per table."""

    def __init__(self, run_dir, rank: int = 0, model=None, depth: int = 1, points_model=None,
                 budget_bytes=None, top: int = 20):
        self.run_dir, self.rank, self.depth, self.top = Path(run_dir), rank, depth, top
        self.points_model, self.budget_bytes = points_model, budget_bytes
        self.voxels = 0
        self.report = None
        self._params = []
        self._made = WeakIdKeyDictionary()
        self.scope = ModuleScope({}, on_exit=self._tag, on_root=self._root)
        self.saved = SavedTensorTracker(owner=lambda: self.scope.current() or OUTSIDE_ROW)
        if model is not None:
            self.watch(model)

    def watch(self, model) -> None:
        """Name the tensors `model`'s modules make (at this guard's depth)."""
        self.scope.names.update({id(m): n for n, m in select_modules(model, self.depth)})
        self.scope.names.setdefault(id(model), MODEL_ROW)
        self._params += list(model.parameters()) + list(model.buffers())

    def _root(self, args):
        self.voxels = rows_of(args) or self.voxels
        for t in tensors_in(args):
            self._made[t] = "(input)"

    def _tag(self, name, module, args, output):
        for t in tensors_in(output):
            self._made[t] = name

    def __enter__(self):
        self.scope.__enter__()
        self.saved.__enter__()
        return self

    def __exit__(self, exc_type, exc, tb):
        self.saved.__exit__(exc_type, exc, tb)
        self.scope.__exit__(exc_type, exc, tb)
        if exc is not None and is_oom(exc):
            try:
                self.report = self._write(exc)
            except Exception as err:  # the report must never hide the error the user needs to see
                log.warning("could not write the out-of-memory report: %s: %s", type(err).__name__, err)
        return False

    def _live(self, device_type: str):
        """[(owner, tensor)] of live tensors on `device_type`, one per storage."""
        objects = gc.get_objects()
        # type(o), not isinstance: a lazy module object would answer a __class__ lookup with a warning
        candidates = [(None, o) for o in objects if issubclass(type(o), torch.Tensor)]
        candidates += self.saved.live()
        owners = held_by(objects, self._params)
        owners.update({storage_key(p): "(parameters)" for p in self._params})
        seen, out = set(), []
        for owner, t in candidates:
            key = storage_key(t)
            if t.device.type != device_type or key is None or key in seen:
                continue
            seen.add(key)
            owner = self._made.get(t) or owner or owners.get(key) or "(untracked)"
            if owners.get(key) == "(parameters)":
                owner = "(parameters)"
            out.append((owner, t))
        return out

    def _write(self, exc) -> dict:
        device_type = "cuda" if "CUDA" in str(exc) else "cpu"
        live = self._live(device_type)
        by_module, by_shape = defaultdict(lambda: [0, 0]), defaultdict(lambda: [0, 0])
        for owner, t in live:
            size = storage_bytes(t)
            for table, key in ((by_module, owner), (by_shape, (tuple(t.shape), str(t.dtype).replace("torch.", "")))):
                table[key][0] += 1
                table[key][1] += size
        total = sum(v[1] for v in by_module.values())
        request = requested_bytes(str(exc))
        suggestion, how = self._suggest(total - by_module.get("(parameters)", (0, 0))[1], request)
        report = {
            "error_type": type(exc).__name__, "error": str(exc)[:2000], "device": device_type,
            "voxels": self.voxels, "requested_bytes": request, "live_bytes": total,
            "suggested_limit_numpoints": suggestion, "suggestion_method": how,
            "by_module": [{"module": k, "tensors": v[0], "bytes": v[1]}
                          for k, v in sorted(by_module.items(), key=lambda kv: -kv[1][1])],
            "by_shape": [{"shape": list(k[0]), "dtype": k[1], "tensors": v[0], "bytes": v[1]}
                         for k, v in sorted(by_shape.items(), key=lambda kv: -kv[1][1])[:self.top]],
        }
        self.run_dir.mkdir(parents=True, exist_ok=True)
        name = "oom_report.json" if self.rank == 0 else f"oom_report_rank{self.rank}.json"
        (self.run_dir / name).write_text(json.dumps(report, indent=1))
        log.error("%s\nwritten to %s", format_oom(report), self.run_dir / name)
        return report

    def _suggest(self, activations: int, request):
        if self.points_model is not None and self.budget_bytes:
            return (self.points_model.largest_fitting(self.budget_bytes),
                    "points model: largest count whose predicted peak fits the budget")
        if not self.voxels:
            return None, "no voxel count seen (the failure came before any forward)"
        if request is None or activations + request <= 0:
            return self.voxels // 2, "half the batch (the failed request's size is unknown)"
        scale = activations / (activations + request)
        return int(self.voxels * scale * 0.9), "voxels x live activations / (live activations + request) x 0.9"


def _tensors_within(obj, depth: int = 3):
    """Tensors reachable from `obj` through dicts, lists, tuples and plain attributes (`depth` levels)."""
    if isinstance(obj, torch.Tensor):
        yield obj
        return
    if depth == 0:
        return
    if isinstance(obj, dict):
        items = obj.values()
    elif isinstance(obj, (list, tuple)):
        items = obj
    elif hasattr(obj, "__dict__") and not isinstance(obj, (type, torch.nn.Module)):
        items = vars(obj).values()
    else:
        return
    for item in items:
        yield from _tensors_within(item, depth - 1)


def held_by(objects, params) -> dict:
    """{storage key: owner row} for the tensors the module outputs and autograd do not account
    for (issue 23: most of a CPU report's live memory was "(untracked)"): the watched parameters'
    gradients, optimizer state, the sparse tensors' coordinate sets and kernel maps
    (lib.sparse SparseContext caches), and the tensors of modules not watched (an EMA copy)."""
    from lib.sparse.tensor import SparseContext

    owners = {}
    for p in params:
        if getattr(p, "grad", None) is not None:
            owners.setdefault(storage_key(p.grad), "(gradients)")
    for o in objects:
        kind = type(o)
        if issubclass(kind, torch.optim.Optimizer):
            for t in _tensors_within(o.state, 3):
                owners.setdefault(storage_key(t), "(optimizer state)")
        elif issubclass(kind, SparseContext):
            for t in _tensors_within(o, 4):
                owners.setdefault(storage_key(t), "(coordinates and kernel maps)")
        elif issubclass(kind, torch.nn.Module):
            for t in list(o.parameters(recurse=False)) + list(o.buffers(recurse=False)):
                owners.setdefault(storage_key(t), "(other modules' weights)")
    return owners


def format_oom(report: dict) -> str:
    lines = [f"out of memory on {report['device']} with {report['voxels']} voxels in the batch: "
             f"{mib(report['live_bytes'])} MiB live, the failed request {mib(report['requested_bytes'])} MiB; "
             f"suggested data.limit_numpoints={report['suggested_limit_numpoints']} "
             f"({report['suggestion_method']})", "live tensors by the module that made them:"]
    lines += [f"  {r['module']:<32} {r['tensors']:>6} tensors {mib(r['bytes']):>10} MiB" for r in report["by_module"]]
    lines.append("largest groups by shape:")
    lines += [f"  {str(tuple(r['shape'])):<32} {r['dtype']:<8} {r['tensors']:>6} tensors {mib(r['bytes']):>10} MiB"
              for r in report["by_shape"][:10]]
    return "\n".join(lines)
