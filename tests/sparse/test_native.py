"""lib.sparse.native (C++ kernels built on first use) and the mixing op's kernel: the build cache,
the fallback when no compiler works, the mode switch, and results that do not depend on the number
of threads or the path (kernel against tensor ops, float32, a real-scan sized neighbourhood)."""
import pytest
import torch

from lib.sparse import KernelRegion, SparseTensor, mixing, mixing_native, native
from lib.sparse import nn as snn
from lib.sparse.norm_relu import NormReLU
from tests.sparse.dense_ref import random_coords

needs_kernel = pytest.mark.skipif(native.load("mixing", mixing_native._ABI) is None,
                                  reason=f"the mixing kernel does not build here: {native.reason('mixing')}")


@needs_kernel
def test_builds_into_the_cache_once_and_loads_it_after(fresh, monkeypatch):
    assert native.load("mixing", mixing_native._ABI) is not None
    built = list(fresh.glob("mixing-*.so"))
    assert len(built) == 1
    stamp = built[0].stat().st_mtime_ns
    monkeypatch.setattr(native, "_loaded", {})  # a new process: finds the file, does not rebuild
    assert native.load("mixing", mixing_native._ABI) is not None
    assert [p.stat().st_mtime_ns for p in fresh.glob("mixing-*.so")] == [stamp]


def test_without_a_working_compiler_the_op_falls_back_with_the_reason(fresh, monkeypatch, caplog):
    monkeypatch.setenv("CXX", "false")  # exits 1 at once: a broken toolchain
    monkeypatch.setenv("VOXSEG_MIXING_KERNEL", "auto")
    with caplog.at_level("WARNING"):
        assert not mixing_native.active(torch.device("cpu"), torch.float32)
    assert "failed" in native.reason("mixing") and "mixing.cpp" in native.reason("mixing")
    assert "using tensor ops instead" in caplog.text
    monkeypatch.setenv("VOXSEG_MIXING_KERNEL", "native")
    with pytest.raises(RuntimeError, match="VOXSEG_MIXING_KERNEL=native but the kernel is unavailable"):
        mixing_native.active(torch.device("cpu"), torch.float32)


def test_mode_is_checked_and_cuda_or_half_precision_stay_on_tensor_ops(monkeypatch):
    monkeypatch.setenv("VOXSEG_MIXING_KERNEL", "fast")
    with pytest.raises(ValueError, match="VOXSEG_MIXING_KERNEL must be one of auto, native, torch"):
        mixing_native.active(torch.device("cpu"), torch.float32)
    monkeypatch.setenv("VOXSEG_MIXING_KERNEL", "auto")
    assert not mixing_native.active(torch.device("meta"), torch.float32)
    assert not mixing_native.active(torch.device("cpu"), torch.bfloat16)


def _block_case(seed=5, c=16, heads=4):
    coords = random_coords(2, 9, 1, 0.35, seed)
    x = SparseTensor(torch.zeros(len(coords), 1), coords, engine="torch")
    regions = [KernelRegion.cube(3, 2), KernelRegion.cube(3), KernelRegion.cube(3, 3), KernelRegion.cube(3)]
    tables = [snn.neighbor_table(x, r) for r in regions]
    tables[3] = tables[1]  # two elements on one table object: a shared group
    g = torch.Generator().manual_seed(seed)
    n = len(coords)
    v = torch.randn(n, c, generator=g).requires_grad_()
    a = torch.softmax(torch.randn(n, len(tables), heads, generator=g), 1).requires_grad_()
    ws = [torch.randn(t.shape[1], c, generator=g).requires_grad_() for t in tables]
    w_out = torch.randn(8, c, generator=g).requires_grad_()
    bn = torch.nn.BatchNorm1d(c)
    torch.nn.init.uniform_(bn.weight, 0.5, 1.5)
    torch.nn.init.uniform_(bn.bias, -0.3, 0.3)
    return v, a, ws, tables, w_out, bn


def _run(case, threads):
    v, a, ws, tables, w_out, bn = case
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        out = mixing.mixed_depthwise(v, a, ws, tables, w_out, norm=NormReLU.of(bn))
        up = torch.randn(out.shape, generator=torch.Generator().manual_seed(9))
        return [out, *torch.autograd.grad(out, [v, a, w_out, *ws, bn.weight, bn.bias], up)]
    finally:
        torch.set_num_threads(before)


@needs_kernel
def test_kernel_results_do_not_depend_on_the_thread_count(monkeypatch):
    monkeypatch.setenv("VOXSEG_MIXING_KERNEL", "native")
    case = _block_case()
    for got, want in zip(_run(case, 3), _run(case, 1)):
        assert torch.equal(got, want)


@needs_kernel
def test_kernel_and_tensor_ops_agree_in_float32(monkeypatch):
    case = _block_case(seed=6)
    monkeypatch.setenv("VOXSEG_MIXING_KERNEL", "native")
    native_run = _run(case, 1)
    monkeypatch.setenv("VOXSEG_MIXING_KERNEL", "torch")
    for got, want in zip(native_run, _run(case, 1)):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
