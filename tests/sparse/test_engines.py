"""Every engine agrees with the torch engine (itself proven against dense conv3d) on the same
canonical weights: spconv forward (its CPU wheel has no backward), MinkowskiEngine forward and
backward, torchsparse forward and backward on CUDA. Each skips with the reason when absent."""

import copy
import importlib.util

import pytest
import torch

from lib.sparse import SparseTensor, resolve_engine
from lib.sparse import nn as snn
from lib.sparse.engines import why_not
from tests.sparse.dense_ref import random_coords


def _skip_unless(engine, device="cpu", training=False):
    reason = why_not(engine, device, training)
    if reason is not None:
        pytest.skip(f"{engine} engine unavailable: {reason}")


def _network(dtype):
    torch.manual_seed(0)
    layers = [snn.SubMConv3d(4, 6, 3), snn.SubMConv3d(6, 6, 5, dilation=2), snn.SubMConv3d(6, 6, 1),
              snn.DepthwiseConv3d(6, 3), snn.DownConv3d(6, 5), snn.SubMConv3d(5, 5, 3),
              snn.DownConv3d(5, 5), snn.UpConv3d(5, 5), snn.UpConv3d(5, 3)]
    return [layer.to(dtype) for layer in layers]


def _run(engine, layers, coords, feats, stride, backward):
    """Outputs of every layer, and (when backward) the feature and weight gradients."""
    for layer in layers:
        layer.zero_grad()
    f = feats.clone().requires_grad_(backward)
    x = SparseTensor(f, coords, stride=stride, engine=engine)
    outs = []
    with torch.set_grad_enabled(backward):
        for layer in layers:
            x = layer(x)
            outs.append(x.feats)
        if not backward:
            return outs, None, None
        # a fixed, non-uniform upstream gradient on every layer's output
        loss = sum((o * torch.linspace(-1, 1, o.numel(), dtype=o.dtype, device=o.device).view_as(o)).sum()
                   for o in outs)
        loss.backward()
    return outs, f.grad, [layer.weight.grad for layer in layers]


def _compare(engine, device, dtype, backward, tol):
    """`engine` on `device` against the torch engine on CPU, same weights and inputs."""
    coords = random_coords(3, 12, 2, 0.25, seed=11)
    coords[:, 1] -= 10  # negative coordinates too
    feats = torch.randn(len(coords), 4, dtype=dtype)
    layers = _network(dtype)
    ref = _run("torch", layers, coords, feats, 2, backward)
    ref = (ref[0], ref[1], None if ref[2] is None else [g.clone() for g in ref[2]])
    moved = [copy.deepcopy(layer).to(device) for layer in layers]
    got = _run(engine, moved, coords.to(device), feats.to(device), 2, backward)
    for i, (a, b) in enumerate(zip(ref[0], got[0])):
        torch.testing.assert_close(b.cpu(), a, atol=tol, rtol=tol, msg=lambda m: f"layer {i}: {m}")
    if backward:
        torch.testing.assert_close(got[1].cpu(), ref[1], atol=tol, rtol=tol)
        for i, (a, b) in enumerate(zip(ref[2], got[2])):
            torch.testing.assert_close(b.cpu(), a, atol=tol, rtol=tol, msg=lambda m: f"weight grad {i}: {m}")


def test_spconv_forward_matches_torch_engine():
    _skip_unless("spconv")
    _compare("spconv", "cpu", torch.float32, backward=False, tol=1e-4)


def test_spconv_cpu_forward_is_repeatable():
    """spconv 2.3.8's CPU kernels race on several threads; the adapter runs them on one."""
    _skip_unless("spconv")
    coords = random_coords(2, 8, 1, 0.4, seed=1)
    layer = snn.SubMConv3d(1, 1, 3)
    with torch.no_grad():
        for _ in range(10):
            f = torch.randn(len(coords), 1)
            a = layer(SparseTensor(f, coords, engine="torch")).feats
            b = layer(SparseTensor(f, coords, engine="spconv")).feats
            torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-5)


def test_spconv_cannot_train_on_cpu():
    if importlib.util.find_spec("spconv") is None:
        pytest.skip("spconv is not installed")
    with pytest.raises(RuntimeError, match="backward needs CUDA"):
        resolve_engine("spconv", "cpu", training=True)
    assert resolve_engine("auto", "cpu", training=True) != "spconv"


def test_minkowski_forward_and_backward_match_torch_engine():
    _skip_unless("minkowski", training=True)
    _compare("minkowski", "cpu", torch.float64, backward=True, tol=1e-9)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="torchsparse runs on CUDA only and no GPU is visible")
def test_torchsparse_matches_torch_engine_on_cuda():
    _skip_unless("torchsparse", "cuda", training=True)
    _compare("torchsparse", "cuda", torch.float32, backward=True, tol=1e-3)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU is visible")
@pytest.mark.parametrize("engine", ["torch", "spconv", "minkowski"])
def test_engines_on_cuda_match_torch_engine(engine):
    _skip_unless(engine, "cuda", training=engine != "spconv")
    _compare(engine, "cuda", torch.float32, backward=True, tol=1e-3)


@pytest.mark.parametrize("engine", ["minkowski", "spconv", "torchsparse"])
def test_state_dict_moves_between_engines(engine):
    """One checkpoint, two engines, same result: the weight layout is the canonical one everywhere.
    Runs for every engine installed (spconv where MinkowskiEngine is absent), on CUDA for torchsparse."""
    device = "cuda" if engine == "torchsparse" and torch.cuda.is_available() else "cpu"
    _skip_unless(engine, device)
    coords = random_coords(1, 10, 1, 0.3, seed=3).to(device)
    feats = torch.randn(len(coords), 4, device=device)
    torch.manual_seed(0)
    a = torch.nn.Sequential(snn.SubMConv3d(4, 8), snn.ReLU(), snn.SubMConv3d(8, 2, 3, dilation=2),
                            snn.DownConv3d(2, 4), snn.UpConv3d(4, 2)).to(device)
    b = torch.nn.Sequential(snn.SubMConv3d(4, 8), snn.ReLU(), snn.SubMConv3d(8, 2, 3, dilation=2),
                            snn.DownConv3d(2, 4), snn.UpConv3d(4, 2)).to(device)
    b.load_state_dict(a.state_dict())
    with torch.no_grad():
        ya = a(SparseTensor(feats, coords, engine="torch")).feats
        x = SparseTensor(feats, coords, engine=engine)
        yb = b(x).feats
    assert x.engine(training=False).name == engine  # the layers ran on that engine, not a fallback
    torch.testing.assert_close(yb, ya, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("engine", ["spconv", "minkowski"])
def test_upconv_without_a_down_pass_on_that_engine(engine):
    """UpConv onto finer coordinates known in the ctx, with no DownConv run on this engine before."""
    _skip_unless(engine)
    fine = random_coords(2, 10, 1, 0.3, seed=9)
    layer = snn.UpConv3d(3, 2)
    outs = []
    with torch.no_grad():
        for name in ("torch", engine):
            x = SparseTensor(torch.zeros(len(fine), 1), fine, engine=name)
            coarse = x.ctx.coords(2)
            feats = torch.arange(len(coarse) * 3, dtype=torch.float32).view(-1, 3).sin()
            outs.append(layer(SparseTensor(feats, coarse, 2, x.ctx)).feats)
    torch.testing.assert_close(outs[1], outs[0], atol=1e-5, rtol=1e-5)


def test_auto_picks_the_engines_in_the_declared_order():
    from lib.sparse.engines import ENGINES, auto_order

    assert set(ENGINES) == {"torch", "spconv", "minkowski", "torchsparse"} and ENGINES[0] == "torch"
    # the order `auto` tried before the engines declared their own priorities
    assert auto_order("cuda") == ["spconv", "torchsparse", "minkowski", "torch"]
    assert auto_order("cpu") == ["torch", "minkowski", "spconv"]


def test_unknown_engine_names_suggest_the_closest():
    from lib.config import ConfigError

    with pytest.raises(ConfigError) as exc_info:
        resolve_engine("spconf", "cpu", training=False)
    assert str(exc_info.value).startswith("unknown sparse engine 'spconf' for 'engine'; did you mean 'spconv'?")
    with pytest.raises(ConfigError, match="did you mean 'minkowski'"):
        why_not("minkowsky", "cpu", False)


def test_an_engine_registered_from_outside_is_resolved_and_used():
    from lib.sparse import engines
    from lib.sparse.engines.torch_engine import TorchEngine

    class CountingEngine(TorchEngine):
        name = "counting"
        calls = 0

        def subm_conv(self, x, weight, kernel_size, dilation):
            CountingEngine.calls += 1
            return super().subm_conv(x, weight, kernel_size, dilation)

    spec = engines.EngineSpec("counting", CountingEngine, package="no_such_package_xyz", install="pip install it",
                              priority={"cpu": 0})
    engines.register_engine(spec)
    try:
        assert why_not("counting", "cpu", True) == "no_such_package_xyz is not installed (pip install it)"
        assert resolve_engine("auto", "cpu", True) == "torch"  # not installed: auto skips it
        engines.register_engine(engines.EngineSpec("counting", CountingEngine, priority={"cpu": 0}))
        assert resolve_engine("auto", "cpu", True) == "counting"  # installed and first for CPU
        coords = random_coords(1, 6, 1, 0.3, seed=1)
        layer = snn.SubMConv3d(2, 3, 3)
        feats = torch.randn(len(coords), 2)
        out = layer(SparseTensor(feats, coords, engine="counting")).feats
        torch.testing.assert_close(out, layer(SparseTensor(feats, coords, engine="torch")).feats)
        assert CountingEngine.calls == 1
    finally:
        engines._SPECS.pop("counting")
        engines._INSTANCES.pop("counting", None)
