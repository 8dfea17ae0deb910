"""models.recompute: a ConvBNReLU whose activation is recomputed in backward gives the plain
layer's values, gradients and running statistics, and keeps one [N, C] tensor less after forward."""
import copy

import pytest
import torch
from torch import nn

from lib.profiler.meter import MemoryTimeline
from lib.sparse import SparseTensor
from lib.sparse import nn as snn
from models.recompute import conv_bn_relu_then, recompute_in_backward
from tests.sparse.dense_ref import random_coords


def _layer(cin, cout, conv):
    conv = snn.SubMConv3d(cin, cout, kernel_size=3) if conv == "submconv" else snn.Linear(cin, cout, bias=False)
    return nn.Sequential(conv, snn.BatchNorm(cout), snn.ReLU(inplace=True))


@pytest.mark.parametrize("conv", ["submconv", "linear"])
@pytest.mark.parametrize("training", [True, False])
def test_same_values_gradients_and_running_stats_as_the_plain_layer(conv, training):
    torch.manual_seed(0)
    coords = random_coords(2, 6, 1, 0.4, seed=3)
    feats = torch.randn(len(coords), 5, dtype=torch.float64)
    layer = _layer(5, 6, conv).double()
    nn.init.uniform_(layer[1].module.weight, 0.5, 1.5)
    nn.init.uniform_(layer[1].module.bias, -0.5, 0.5)
    head = snn.Linear(6, 4, bias=False).double()  # a consumer that saves its input
    results = []
    for recompute in (False, True):
        lay, hd = copy.deepcopy(layer).train(training), copy.deepcopy(head)
        x = SparseTensor(feats.clone().requires_grad_(), coords, engine="torch")
        if recompute:
            y, _ = conv_bn_relu_then(lay, x, lambda t: hd(t).feats)
        else:
            y = hd(lay(x)).feats
        up = torch.randn(y.shape, dtype=y.dtype, generator=torch.Generator().manual_seed(1))
        grads = torch.autograd.grad(y, [x.feats, *lay.parameters(), *hd.parameters()], up)
        bn = lay[1].module
        results.append([y, *grads, bn.running_mean, bn.running_var, bn.num_batches_tracked])
    for got, want in zip(results[1], results[0]):
        torch.testing.assert_close(got, want)


def test_the_activation_is_not_kept_after_forward():
    torch.manual_seed(0)
    n, c = 20000, 32
    coords = torch.cat([torch.zeros(n, 1, dtype=torch.int32), torch.randperm(40 ** 3)[:n, None].int()
                        .div(torch.tensor([[1600, 40, 1]]), rounding_mode="floor").remainder(40)], 1)
    x = SparseTensor(torch.randn(n, c), coords, engine="torch")
    layer, head = _layer(c, c, "linear"), snn.Linear(c, c, bias=False)
    kept = []
    for recompute in (False, True):
        with MemoryTimeline("cpu") as timeline:
            y = conv_bn_relu_then(layer, x, lambda t: head(t).feats)[0] if recompute else head(layer(x)).feats
            timeline.mark("forward")
        kept.append(timeline.live[1])
        del y
    activation = n * c * 4
    assert kept[0] - kept[1] >= 0.9 * activation


def test_an_activation_read_by_two_ops_is_recomputed_once():
    """A ReLU and the next layer both save the activation: backward runs the recomputation once
    and both read its result (the gradient equals the stored-activation one)."""
    x = torch.randn(6, 4, dtype=torch.float64, requires_grad=True)
    w = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    calls = []

    def again():
        calls.append(1)
        return torch.relu(x * 2)

    act = x * 2
    with recompute_in_backward(act, again):
        y = torch.relu_(act) @ w  # relu_ saves its output, mm saves its input: one tensor
    got = torch.autograd.grad(y.sum(), [x, w])
    want = torch.autograd.grad((torch.relu(x * 2) @ w).sum(), [x, w])
    assert len(calls) == 1
    for g, r in zip(got, want):
        torch.testing.assert_close(g, r)


def _chained(b, x):
    """A CodedVTR block's modules chained plainly (every activation stored)."""
    tables = [snn.neighbor_table(x, r) for r in b.regions]
    alpha = b.mixing(x, tables)
    y = b.mix(b.value(x), alpha, tables)
    return b.out(x.replace(y)).feats + x.feats


@pytest.mark.parametrize("aggregate", ["fused", "depthwise"])
def test_codedvtr_block_with_recompute_equals_its_plain_composition(aggregate):
    """The block (activations and y recomputed in backward) against its modules chained plainly:
    output, every gradient and the BN running statistics agree."""
    from models.codedvtr import CodedVTRBlock

    torch.manual_seed(0)
    coords = random_coords(2, 7, 1, 0.35, seed=5)
    block = CodedVTRBlock(8, 8, heads=2, dilations=(1, 2), aggregate=aggregate).double().train()
    plain = copy.deepcopy(block)
    feats = torch.randn(len(coords), 8, dtype=torch.float64)

    outs = []
    for b, run in ((block, lambda b, x: b(x).feats), (plain, _chained)):
        x = SparseTensor(feats.clone().requires_grad_(), coords, engine="torch")
        y = run(b, x)
        up = torch.randn(y.shape, dtype=y.dtype, generator=torch.Generator().manual_seed(2))
        grads = torch.autograd.grad(y, [x.feats, *b.parameters()], up, allow_unused=True)
        stats = [m.running_mean for m in b.modules() if isinstance(m, nn.BatchNorm1d)]
        outs.append([y, *[g for g in grads if g is not None], *stats])
    assert len(outs[0]) == len(outs[1])
    for got, want in zip(*outs):
        torch.testing.assert_close(got, want)


def test_codedvtr_block_under_cpu_bf16_autocast():
    """Recompute hooks and the fused mixing + projection under autocast: the output lands within
    bf16 rounding of the float32 pass, and the input gradient is no further from float32's than the
    plain composition's under autocast (bf16 moves the gradients themselves far more, through
    BatchNorm, with or without recompute; the fused op projects in float32 where the plain
    composition's Linear runs in bf16, so the two are not bit-equal)."""
    from models.codedvtr import CodedVTRBlock

    torch.manual_seed(0)
    coords = random_coords(2, 7, 1, 0.35, seed=6)
    block = CodedVTRBlock(8, 8, heads=2, dilations=(1, 2)).train()
    feats = torch.randn(len(coords), 8)
    results = []
    for bf16, run in ((False, lambda b, x: b(x).feats), (True, lambda b, x: b(x).feats), (True, _chained)):
        b = copy.deepcopy(block)
        x = SparseTensor(feats.clone().requires_grad_(), coords, engine="torch")
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            y = run(b, x)
        y.float().square().sum().backward()
        assert torch.isfinite(x.feats.grad).all()
        results.append((y.detach().float(), x.feats.grad))
    fp32, recomputed, plain = results
    torch.testing.assert_close(recomputed[0], fp32[0], rtol=0.02, atol=0.02 * float(fp32[0].abs().max()))
    torch.testing.assert_close(plain[0], fp32[0], rtol=0.02, atol=0.02 * float(fp32[0].abs().max()))
    grad_error = [float((r[1] - fp32[1]).abs().max()) for r in (recomputed, plain)]
    assert grad_error[0] <= 1.25 * grad_error[1] + 1e-6, grad_error
