"""oom_guard: a real failed CPU allocation (and a MemoryError) inside a forward writes the report of
what was alive, and the caller still receives the original error."""
import json

import pytest
import torch
from torch import nn

from lib.profiler.fit import PointsModel
from lib.profiler.oom import is_oom, oom_guard, requested_bytes

N, CIN, HIDDEN = 500, 8, 64
HUGE = 1 << 46  # 64 TiB: the CPU allocator refuses it


class Boom(nn.Module):
    """Asks the allocator for more memory than any machine has (a real allocation failure)."""

    def __init__(self, error=None):
        super().__init__()
        self.error = error

    def forward(self, x):
        if self.error is not None:
            raise self.error
        return x + torch.empty(HUGE, dtype=torch.uint8)[:1]


def _model(error=None):
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(CIN, HIDDEN), nn.ReLU(), Boom(error))


def test_failed_cpu_allocation_writes_the_report_and_reraises(tmp_path):
    model, x = _model(), torch.randn(N, CIN)
    with pytest.raises(RuntimeError, match="can't allocate memory") as caught:
        with oom_guard(tmp_path, model=model) as guard:
            model(x).sum().backward()
    assert is_oom(caught.value) and guard.report is not None
    r = json.loads((tmp_path / "oom_report.json").read_text())
    assert r == guard.report
    assert r["voxels"] == N and r["device"] == "cpu" and r["requested_bytes"] == HUGE
    rows = {row["module"]: row for row in r["by_module"]}
    # alive at the failure: the ReLU output (kept for its backward), the input, the parameters;
    # the Linear output was freed once the ReLU had run
    assert rows["1"] == {"module": "1", "tensors": 1, "bytes": N * HIDDEN * 4}
    assert rows["(input)"]["bytes"] == N * CIN * 4
    assert rows["(parameters)"]["bytes"] == sum(p.numel() * 4 for p in model.parameters())
    assert "0" not in rows
    shapes = {(tuple(s["shape"]), s["dtype"]): s["bytes"] for s in r["by_shape"]}
    assert shapes[((N, HIDDEN), "float32")] == N * HIDDEN * 4
    assert 0 <= r["suggested_limit_numpoints"] < N  # far too big a request: far fewer voxels


def test_memory_error_with_a_points_model_suggests_the_fitting_count(tmp_path):
    model, x = _model(MemoryError("out of host memory")), torch.randn(N, CIN)
    with pytest.raises(MemoryError) as caught:
        with oom_guard(tmp_path, rank=1, model=model, points_model=PointsModel(1000.0, 10.0),
                       budget_bytes=6000):
            model(x)
    assert str(caught.value) == "out of host memory"
    assert not (tmp_path / "oom_report.json").exists()  # rank 1 writes its own file
    r = json.loads((tmp_path / "oom_report_rank1.json").read_text())
    assert r["suggested_limit_numpoints"] == 470 and r["requested_bytes"] is None  # (0.95 * 6000 - 1000) / 10


def test_other_errors_pass_without_a_report(tmp_path):
    model = _model(ValueError("bad input"))
    with pytest.raises(ValueError, match="bad input"):
        with oom_guard(tmp_path, model=model):
            model(torch.randn(4, CIN))
    assert not list(tmp_path.iterdir())


def test_requested_size_from_the_error_text():
    assert requested_bytes("CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; ...") == 2 * 2**30
    assert requested_bytes("DefaultCPUAllocator: can't allocate memory: you tried to allocate 1234 bytes.") == 1234
    assert requested_bytes("something else") is None


def test_activations_held_only_by_autograd_are_reported_inside_a_profiler(tmp_path):
    """The ReLU output has no Python reference left when the last layer fails (nn.Sequential moved on):
    only the autograd graph holds it, and the guard still sees it while a profiler is open inside."""
    from lib.profiler import MemoryProfiler

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(CIN, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, 3), Boom())
    with pytest.raises(RuntimeError, match="can't allocate memory"):
        with oom_guard(tmp_path, model=model):
            with MemoryProfiler(model, "cpu"):
                model(torch.randn(N, CIN))
    rows = {row["module"]: row for row in json.loads((tmp_path / "oom_report.json").read_text())["by_module"]}
    assert rows["1"]["bytes"] == N * HIDDEN * 4
    assert rows["2"]["bytes"] == N * 3 * 4  # the last Linear's output, the failing layer's input


def test_live_memory_is_attributed_beyond_module_outputs(tmp_path):
    """Issue 23: 89 % of a CPU report's live memory was "(untracked)". Gradients, optimizer state,
    the sparse context's coordinates / kernel maps and unwatched modules (an EMA copy) get rows of
    their own, each holding exactly those tensors' bytes."""
    import copy

    from lib.profiler.saved import storage_bytes
    from lib.sparse import SparseTensor

    model = nn.Sequential(nn.Linear(CIN, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, 4))
    ema = copy.deepcopy(model)  # not watched
    optimizer = torch.optim.Adam(model.parameters())
    model(torch.randn(N, CIN)).sum().backward()
    optimizer.step()  # Adam's exp_avg / exp_avg_sq: 2x the parameters
    xyz = torch.stack(torch.meshgrid(*[torch.arange(8)] * 3, indexing="ij"), -1).reshape(-1, 3)[:N]  # distinct
    coords = torch.cat([torch.zeros(len(xyz), 1, dtype=torch.int64), xyz], 1).int()
    x = SparseTensor(torch.randn(len(coords), CIN), coords)
    from lib.profiler.saved import storage_key

    with oom_guard(tmp_path, model=model) as guard:
        rows, owner_of = {}, {}
        for owner, t in guard._live("cpu"):
            rows[owner] = rows.get(owner, 0) + storage_bytes(t)
            owner_of[storage_key(t)] = owner
    params = sum(p.numel() * 4 for p in model.parameters())
    assert rows["(parameters)"] == params
    assert rows["(gradients)"] == params
    assert rows["(optimizer state)"] == 2 * params + sum(  # + Adam's step counters
        t.numel() * t.element_size() for s in optimizer.state.values() for k, t in s.items() if k == "step")
    # the EMA copy (other tests' models may be alive too: checked tensor by tensor)
    assert {owner_of[storage_key(p)] for p in ema.parameters()} == {"(other modules' weights)"}
    assert rows.get("(coordinates and kernel maps)", 0) > 0
    del x
