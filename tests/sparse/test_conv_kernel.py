"""The torch engine's convolution through its fused C++ kernel (lib/sparse/conv_native.py,
lib/sparse/native/conv.cpp): equal to torch's dense conv3d and to the tensor-op path (values and
gradients of features and weights), a float64 gradient check, float32 and bfloat16 (CPU autocast),
the same bits with 1 and 2 threads on a real scan, and the fallbacks: no compiler, the mode switch,
the forced CUDA path and the meta device never reach the kernel."""
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lib.sparse import SparseTensor, conv_native, native
from lib.sparse import nn as snn
from lib.sparse.engines import torch_engine
from tests.conftest import REAL_DATA
from tests.sparse.dense_ref import (assert_down_up_matches_dense, assert_submanifold_matches_conv3d,
                                    canonical_to_conv3d, densify, leaf, random_coords, sample)

GRID = 7
needs_kernel = pytest.mark.skipif(native.load("conv", conv_native._ABI) is None,
                                  reason=f"the conv kernel does not build here: {native.reason('conv')}")


@pytest.fixture
def kernel(monkeypatch):
    """The kernel forced (an error if it cannot run), and a record of its calls: a test that meant to
    exercise it fails if the tensor-op path ran instead."""
    monkeypatch.setenv("VOXSEG_CONV_KERNEL", "native")
    calls = {"forward": 0, "backward": 0}
    for name in calls:
        original = getattr(conv_native, name)

        def counted(*args, _name=name, _original=original):
            calls[_name] += 1
            return _original(*args)

        monkeypatch.setattr(conv_native, name, counted)
    return calls


def _run(mode, monkeypatch, layer, feats, coords, stride=1, threads=None):
    """(out, grad feats, grad weight) of layer on a fresh tensor under VOXSEG_CONV_KERNEL=mode, for
    a fixed upstream gradient."""
    monkeypatch.setenv("VOXSEG_CONV_KERNEL", mode)
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        f = feats.detach().clone().requires_grad_()
        out = layer(SparseTensor(f, coords, stride=stride, engine="torch")).feats
        # representable in bf16, so runs in float32 and bf16 see the same upstream gradient
        up = torch.randn(out.shape, generator=torch.Generator().manual_seed(3)).to(torch.bfloat16).to(out.dtype)
        gf, gw = torch.autograd.grad(out, (f, layer.weight), up)
    finally:
        torch.set_num_threads(before)
    return out.detach(), gf, gw


@needs_kernel
@pytest.mark.parametrize("kernel_size,dilation,stride,batch", [(3, 1, 1, 2), (3, 2, 2, 1), (5, 1, 1, 3), (1, 1, 1, 2)])
def test_submanifold_through_the_kernel_matches_conv3d(kernel, kernel_size, dilation, stride, batch):
    coords = random_coords(batch, GRID, stride, 0.3, seed=kernel_size + dilation + batch)  # unsorted rows
    feats = leaf(len(coords), 3, 1)
    layer = snn.SubMConv3d(3, 5, kernel_size, dilation, bias=True).double()
    out = layer(SparseTensor(feats, coords, stride=stride, engine="torch")).feats
    assert_submanifold_matches_conv3d(layer, feats, coords, out, stride, kernel_size, dilation, GRID, batch)
    assert kernel["forward"] == 1 and kernel["backward"] == 1


@needs_kernel
def test_down_and_up_through_the_kernel_match_dense(kernel):
    assert_down_up_matches_dense(GRID)  # maps without a centre, n_in != n_out
    assert kernel["forward"] == 2 and kernel["backward"] == 2


@needs_kernel
def test_gradcheck_float64(kernel):
    coords = random_coords(1, 5, 1, 0.4, seed=4)
    x = SparseTensor(torch.zeros(len(coords), 1), coords, engine="torch")
    kmap = x.ctx.kernel_map(1, 3, 1)
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(len(coords), 3, dtype=torch.float64, generator=g).requires_grad_()
    weight = torch.randn(kmap.volume, 3, 2, dtype=torch.float64, generator=g).requires_grad_()
    assert torch.autograd.gradcheck(lambda f, w: torch_engine.conv(f, w, kmap), (feats, weight))
    assert kernel["backward"] > 0


@needs_kernel
@pytest.mark.parametrize("cin,cout", [(5, 21), (64, 64), (32, 80), (16, 3)])  # vector tails, register tiles
def test_float32_kernel_equals_the_tensor_op_path(monkeypatch, cin, cout):
    coords = random_coords(2, 10, 1, 0.35, seed=cin)
    torch.manual_seed(cin)
    layer = snn.SubMConv3d(cin, cout, 3)
    feats = torch.randn(len(coords), cin)
    got = _run("native", monkeypatch, layer, feats, coords)
    want = _run("torch", monkeypatch, layer, feats, coords)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-4)


@needs_kernel
def test_conv_many_shares_one_input_gradient(kernel, monkeypatch):
    """Two convolutions of one input on one map (lib.sparse.nn.subm_conv_many's case) equal two
    separate float64 dense references summed in the gradient."""
    coords = random_coords(2, GRID, 1, 0.3, seed=8)
    x = SparseTensor(torch.zeros(len(coords), 1), coords, engine="torch")
    kmap = x.ctx.kernel_map(1, 3, 1)
    g = torch.Generator().manual_seed(1)
    feats = torch.randn(len(coords), 4, dtype=torch.float64, generator=g).requires_grad_()
    ws = [torch.randn(27, 4, c, dtype=torch.float64, generator=g).requires_grad_() for c in (6, 2)]
    outs = torch_engine.conv_many(feats, ws, [kmap, kmap])
    loss = sum((o * torch.arange(o.numel(), dtype=o.dtype).view_as(o).cos()).sum() for o in outs)
    grads = torch.autograd.grad(loss, (feats, *ws))
    assert kernel["forward"] == 2 and kernel["backward"] == 1  # one backward for both
    monkeypatch.setenv("VOXSEG_CONV_KERNEL", "torch")
    ref = [torch_engine.conv(feats, w, kmap) for w in ws]
    ref_loss = sum((o * torch.arange(o.numel(), dtype=o.dtype).view_as(o).cos()).sum() for o in ref)
    ref_grads = torch.autograd.grad(ref_loss, (feats, *ws))
    for a, b in zip([*outs, *grads], [*ref, *ref_grads]):
        torch.testing.assert_close(a, b)


def _close_to_float64(got, want, dtype):
    """got (dtype) equals the float64 truth to the rounding of its dtype: bf16 keeps 8 bits, and the
    kernel rounds once, after summing in float32."""
    tol = {torch.bfloat16: 1.6e-2, torch.float32: 1e-5}[dtype]
    err = (got.double() - want).abs().max() / want.abs().max()
    assert got.dtype == dtype and err < tol, f"relative error {err:.2e} >= {tol}"


@needs_kernel
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_autocast_and_float32_against_a_float64_dense_truth(kernel, dtype):
    """Under CPU autocast (bf16) or in float32, forward and both gradients against float64 dense
    conv3d of the same (dtype-rounded) inputs."""
    coords = random_coords(2, 9, 1, 0.3, seed=11)
    torch.manual_seed(2)
    layer = snn.SubMConv3d(16, 32, 3)
    feats = torch.randn(len(coords), 16).to(dtype).float()  # representable in dtype: one rounding left
    with torch.no_grad():
        layer.weight.copy_(layer.weight.to(dtype).float())
    f = feats.clone().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
        out = layer(SparseTensor(f, coords, engine="torch")).feats
    up = torch.randn(out.shape, generator=torch.Generator().manual_seed(5)).to(dtype)
    gf, gw = torch.autograd.grad(out, (f, layer.weight), up)

    rf = feats.double().requires_grad_()
    rw = layer.weight.detach().double().requires_grad_()
    dense = F.conv3d(densify(rf, coords, 1, 9, 2), canonical_to_conv3d(rw, 3), padding=1)
    ref = sample(dense, coords, 1)
    rgf, rgw = torch.autograd.grad(ref, (rf, rw), up.double())
    _close_to_float64(out, ref, dtype)
    _close_to_float64(gf.to(dtype), rgf, dtype)  # autograd returns f's dtype (float32): cast back
    _close_to_float64(gw.to(dtype), rgw, dtype)
    assert kernel["forward"] == 1 and kernel["backward"] == 1


def _real_scan(voxel_m: float):
    plyfile = pytest.importorskip("plyfile", reason="plyfile reads the ScanNet PLY")
    paths = sorted((REAL_DATA / "scannet" / "scans").glob("*/*_vh_clean_2.ply"))
    if not paths:
        pytest.skip(f"no real ScanNet scans under {REAL_DATA / 'scannet' / 'scans'}")
    vertex = plyfile.PlyData.read(str(paths[0]))["vertex"]
    xyz = np.stack([vertex["x"], vertex["y"], vertex["z"]], 1)
    cells = np.unique(np.floor((xyz - xyz.min(0)) / voxel_m).astype(np.int64), axis=0)
    return torch.from_numpy(np.concatenate([np.zeros((len(cells), 1), np.int64), cells], 1)).to(torch.int32)


@needs_kernel
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_one_and_two_threads_give_the_same_bits_on_a_real_scan(monkeypatch, dtype):
    """Many tiles and every offset on real geometry: tiles and offsets are split between threads,
    each sum keeps its order, so the bits agree; and the float32 path agrees with tensor ops."""
    coords = _real_scan(0.05)
    assert len(coords) > 4 * conv_native.TILE_ROWS
    torch.manual_seed(0)
    layer = snn.SubMConv3d(32, 32, 3).to(dtype)
    feats = torch.randn(len(coords), 32).to(dtype)
    one = _run("native", monkeypatch, layer, feats, coords, threads=1)
    two = _run("native", monkeypatch, layer, feats, coords, threads=2)
    for a, b in zip(one, two):
        assert torch.equal(a, b)
    if dtype == torch.float32:
        for a, b in zip(one, _run("torch", monkeypatch, layer, feats, coords, threads=2)):
            # float32 sums in two orders: the weight gradient sums thousands of pairs
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5 * float(b.abs().max()))


def test_without_a_compiler_the_tensor_op_path_runs_after_one_warning(fresh, monkeypatch, caplog):
    monkeypatch.setenv("CXX", "false")  # exits 1 at once: a broken toolchain
    monkeypatch.setenv("VOXSEG_CONV_KERNEL", "auto")
    coords = random_coords(2, GRID, 1, 0.3, seed=3)
    feats = leaf(len(coords), 3, 1)
    layer = snn.SubMConv3d(3, 4, 3).double()
    with caplog.at_level("WARNING"):
        out = layer(SparseTensor(feats, coords, engine="torch")).feats
    assert "conv.cpp" in native.reason("conv") and "using tensor ops instead" in caplog.text
    assert_submanifold_matches_conv3d(layer, feats, coords, out, 1, 3, 1, GRID, 2)
    monkeypatch.setenv("VOXSEG_CONV_KERNEL", "native")
    with pytest.raises(RuntimeError, match="VOXSEG_CONV_KERNEL=native but the kernel is unavailable"):
        layer(SparseTensor(feats, coords, engine="torch"))


def test_mode_is_checked_and_other_devices_never_take_the_kernel(monkeypatch):
    monkeypatch.setenv("VOXSEG_CONV_KERNEL", "fast")
    with pytest.raises(ValueError, match="VOXSEG_CONV_KERNEL must be one of auto, native, torch"):
        conv_native.active(torch.device("cpu"), torch.float32)
    monkeypatch.setenv("VOXSEG_CONV_KERNEL", "auto")
    assert not conv_native.active(torch.device("meta"), torch.float32)
    assert not conv_native.active(torch.device("cuda"), torch.float32)
    assert not conv_native.active(torch.device("cpu"), torch.float16)
    monkeypatch.setenv("VOXSEG_CONV_KERNEL", "torch")
    assert not conv_native.active(torch.device("cpu"), torch.float32)


@pytest.fixture
def no_kernel(monkeypatch):
    def refuse(*args):
        raise AssertionError("the C++ conv kernel ran on a path that must not take it")

    monkeypatch.setattr(conv_native, "forward", refuse)
    monkeypatch.setattr(conv_native, "backward", refuse)


def test_the_forced_cuda_path_does_not_take_the_kernel(no_kernel, monkeypatch):
    monkeypatch.setenv("VOXSEG_TORCH_CONV_PATH", "per_offset")
    monkeypatch.setenv("VOXSEG_CONV_KERNEL", "auto")
    coords = random_coords(2, GRID, 1, 0.3, seed=6)
    feats = leaf(len(coords), 3, 1)
    layer = snn.SubMConv3d(3, 4, 3).double()
    out = layer(SparseTensor(feats, coords, engine="torch")).feats
    assert_submanifold_matches_conv3d(layer, feats, coords, out, 1, 3, 1, GRID, 2)


def test_meta_tensors_take_the_device_path_not_the_kernel(no_kernel):
    """A CUDA tensor would reach _SparseConv like a meta one: the kernel is CPU-only, so the
    per-offset path must run, allocating on the input's device."""
    coords = random_coords(2, GRID, 1, 0.3, seed=2)
    x = SparseTensor(torch.zeros(len(coords), 1), coords, engine="torch")
    kmap = x.ctx.kernel_map(1, 3, 1)

    def move(ts):
        return [None if t is None else t.to("meta") for t in ts]

    meta_map = type(kmap)(move(kmap.in_idx), move(kmap.out_idx), kmap.n_in, kmap.n_out, kmap.center,
                          *(None if t is None else t.to("meta") for t in (kmap.in_order, kmap.out_order,
                                                                          kmap.in_inverse, kmap.out_inverse)))
    feats = torch.empty(len(coords), 4, device="meta", requires_grad=True)
    weight = torch.empty(27, 4, 6, device="meta", requires_grad=True)
    out = torch_engine.conv(feats, weight, meta_map)
    gx, gw = torch.autograd.grad(out, (feats, weight), torch.empty_like(out))
    assert out.shape == (len(coords), 6) and gx.device.type == gw.device.type == "meta"


@needs_kernel
def test_bfloat16_is_the_float32_sum_rounded_once(monkeypatch):
    """The kernel reads bf16 as float32 and sums in the float32 path's order, so its bf16 results
    are that path's float32 results on the widened inputs, rounded by torch: equal bit for bit
    (weight gradients stay float32 inside, rounded to the weight's dtype by torch too)."""
    coords = random_coords(2, 10, 1, 0.35, seed=21)
    torch.manual_seed(3)
    layer = snn.SubMConv3d(24, 40, 3).to(torch.bfloat16)
    feats = torch.randn(len(coords), 24).to(torch.bfloat16)
    got = _run("native", monkeypatch, layer, feats, coords)
    wide = snn.SubMConv3d(24, 40, 3)
    with torch.no_grad():
        wide.weight.copy_(layer.weight.float())
    want = _run("native", monkeypatch, wide, feats.float(), coords)
    for a, b in zip(got, want):
        assert a.dtype == torch.bfloat16 and torch.equal(a, b.to(torch.bfloat16))


def _vm_flags(address: int) -> list:
    """The VmFlags of this process's mapping holding `address`, from /proc/self/smaps."""
    inside = False
    with open("/proc/self/smaps") as f:
        for line in f:
            head = line.split()[0]
            if "-" in head and ":" not in head:
                lo, hi = (int(v, 16) for v in head.split("-"))
                inside = lo <= address < hi
            elif inside and head == "VmFlags:":
                return line.split()[1:]
    return []


def test_large_outputs_are_advised_as_huge_pages():
    """A fresh output of 38 MiB is an ordinary tensor whose memory carries the huge-page advice
    (VmFlags `hg`; whether the kernel then finds free huge pages depends on the machine's memory)."""
    out = conv_native.fresh(100_000, 96, torch.float32)
    assert out.shape == (100_000, 96) and out.dtype == torch.float32 and out.is_contiguous()
    out.fill_(2.0)
    assert float(out.sum()) == 2.0 * out.numel()
    if not os.path.isdir("/sys/kernel/mm/transparent_hugepage"):
        pytest.skip("this system has no transparent huge pages (not Linux, or a kernel without THP)")
    flags = _vm_flags(out.data_ptr() + out.numel() * 2)
    assert "hg" in flags, flags
