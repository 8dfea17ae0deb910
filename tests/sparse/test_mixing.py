"""lib.sparse.mixing.mixed_depthwise: D depthwise neighbourhood sums mixed per voxel and head, with
the optional fused projection, against the [N, K, C] gather of each element (values, gradients,
gradcheck), on supports that share no offset but the centre and on supports that share a table.
Every test runs on both CPU paths: the tensor ops and the C++ kernel (VOXSEG_MIXING_KERNEL)."""
import copy

import pytest
import torch

from lib.sparse import KernelRegion, SparseTensor
from lib.sparse import mixing, mixing_native, native
from lib.sparse import nn as snn
from tests.sparse.dense_ref import gathered_aggregate, random_coords

@pytest.fixture(autouse=True, params=["torch", "native"])
def kernel(request, monkeypatch):
    """The path under test; the kernel's runs skip, saying why, where it does not build."""
    if request.param == "native" and native.load("mixing", mixing_native._ABI) is None:
        pytest.skip(f"the mixing kernel does not build here: {native.reason('mixing')}")
    monkeypatch.setenv("VOXSEG_MIXING_KERNEL", request.param)
    return request.param


SUPPORTS = {
    "distinct": [KernelRegion.cube(3, 2), KernelRegion.cube(3), KernelRegion.plane("xz", 3)],
    "one_table": [KernelRegion.cube(3)] * 3,  # the discrete block's patterns: every offset shared
    "mixed": [KernelRegion.cube(3), KernelRegion.cross(3, 2), KernelRegion.cube(3)],
}


def _reference(v, a, weights, tables, out_weight):
    """sum_d (element d's gathered [N, K, C] sum weighted by a[:, d]) [@ out_weight.T]."""
    y = sum(gathered_aggregate(v, t, a[:, d:d + 1], w) for d, (t, w) in enumerate(zip(tables, weights)))
    return y if out_weight is None else y @ out_weight.t()


def _case(support, a_rows, project, seed=15, c=6, heads=3):
    coords = random_coords(2, 6, 1, 0.4, seed)
    x = SparseTensor(torch.zeros(len(coords), 1), coords, engine="torch")
    tables = [snn.neighbor_table(x, r) for r in SUPPORTS[support]]
    g = torch.Generator().manual_seed(seed)
    n, d = len(coords), len(tables)
    v = torch.randn(n, c, dtype=torch.float64, generator=g).requires_grad_()
    a = torch.randn(n if a_rows == "per_row" else 1, d, heads, dtype=torch.float64, generator=g).requires_grad_()
    ws = [torch.randn(t.shape[1], c, dtype=torch.float64, generator=g).requires_grad_() for t in tables]
    w_out = torch.randn(4, c, dtype=torch.float64, generator=g).requires_grad_() if project else None
    return v, a, ws, tables, w_out


@pytest.mark.parametrize("support", list(SUPPORTS))
@pytest.mark.parametrize("a_rows", ["per_row", "shared"])
@pytest.mark.parametrize("project", [False, True], ids=["y", "projected"])
def test_matches_the_gathered_reference_in_value_and_gradient(monkeypatch, support, a_rows, project):
    monkeypatch.setitem(mixing.TILE_ELEMENTS, "cpu", 7 * 6)  # tiles of 7 rows: many, a short last one
    monkeypatch.setitem(mixing.PIECE_PAIRS, "cpu", 5)  # a tile's pairs in pieces of 5
    v, a, ws, tables, w_out = _case(support, a_rows, project)
    leaves = [t for t in (v, a, w_out, *ws) if t is not None]
    out = mixing.mixed_depthwise(v, a, ws, tables, w_out)
    ref = _reference(v, a, ws, tables, w_out)
    torch.testing.assert_close(out, ref)
    up = torch.randn(ref.shape, dtype=ref.dtype, generator=torch.Generator().manual_seed(1))
    for got, want in zip(torch.autograd.grad(out, leaves, up), torch.autograd.grad(ref, leaves, up)):
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize("support", ["distinct", "one_table"])
def test_gradcheck_on_tables_without_an_identity_column(monkeypatch, support):
    """First 8 rows of each table (sources beyond them), tiles of 3 rows."""
    monkeypatch.setitem(mixing.TILE_ELEMENTS, "cpu", 3 * 6)
    v, a, ws, tables, w_out = _case(support, "per_row", True, seed=16)
    small = [t[:8] for t in tables]
    assert torch.autograd.gradcheck(lambda v, a, w_out, *ws: mixing.mixed_depthwise(v, a, ws, small, w_out),
                                    (v, a[:8].detach().requires_grad_(), w_out, *ws), fast_mode=True)


def test_tile_size_does_not_change_the_result(monkeypatch):
    v, a, ws, tables, w_out = _case("distinct", "per_row", True, seed=17)
    outs = []
    for rows in (1, 5, 10 ** 6):
        monkeypatch.setitem(mixing.TILE_ELEMENTS, "cpu", rows * 6)
        outs.append(mixing.mixed_depthwise(v, a, ws, tables, w_out))
    for out in outs[1:]:
        torch.testing.assert_close(out, outs[0], rtol=1e-12, atol=1e-12)


def test_keeps_nothing_but_its_inputs_for_backward():
    v, a, ws, tables, w_out = _case("distinct", "per_row", True, seed=18)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        mixing.mixed_depthwise(v, a, ws, tables, w_out)
    inputs = {t.data_ptr() for t in (v, a, w_out, *ws, *tables)}
    assert saved and all(t.data_ptr() in inputs for t in saved)


def test_bad_shapes_say_what_is_wrong():
    v, a, ws, tables, w_out = _case("distinct", "per_row", True, seed=19)
    with pytest.raises(ValueError, match="one weight per table"):
        mixing.mixed_depthwise(v, a, ws[:2], tables)
    with pytest.raises(ValueError, match="a must be"):
        mixing.mixed_depthwise(v, a[:, :2], ws, tables)
    with pytest.raises(ValueError, match="out_weight must be"):
        mixing.mixed_depthwise(v, a, ws, tables, w_out.t())
    with pytest.raises(ValueError, match="a weight must be"):
        mixing.mixed_depthwise(v, a, [w[:, :3] for w in ws], tables)


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("momentum", [0.1, None])
def test_folded_batchnorm_relu_equals_the_module_chain(monkeypatch, training, momentum):
    """norm=NormReLU.of(bn): the op on the BN input equals the op on relu(bn(x)) computed by the
    modules, in value, every gradient (x, a, weights, projection, BN weight and bias) and the BN
    running statistics after two passes; tiles of 4 rows."""
    from torch import nn

    from lib.sparse.norm_relu import NormReLU

    monkeypatch.setitem(mixing.TILE_ELEMENTS, "cpu", 4 * 6)
    v, a, ws, tables, w_out = _case("mixed", "per_row", True, seed=21)
    bn = nn.BatchNorm1d(6, momentum=momentum).double()
    nn.init.uniform_(bn.weight, 0.5, 1.5)
    nn.init.uniform_(bn.bias, -0.3, 0.3)
    bn_ref = copy.deepcopy(bn)
    bn.train(training), bn_ref.train(training)
    results = []
    for fold, module in ((True, bn), (False, bn_ref)):
        for _ in range(2):
            if fold:
                out = mixing.mixed_depthwise(v, a, ws, tables, w_out, norm=NormReLU.of(module))
            else:
                out = mixing.mixed_depthwise(torch.relu(module(v)), a, ws, tables, w_out)
        up = torch.randn(out.shape, dtype=out.dtype, generator=torch.Generator().manual_seed(2))
        leaves = [v, a, w_out, *ws, module.weight, module.bias]
        results.append([out, *torch.autograd.grad(out, leaves, up), module.running_mean, module.running_var,
                         module.num_batches_tracked])
    for got, want in zip(*results):
        torch.testing.assert_close(got, want)


def test_v_is_not_kept_when_only_v_needs_a_gradient():
    """A choice logit's aggregation (fixed weights): v is not saved, and its gradient is still right."""
    v, a, ws, tables, _ = _case("distinct", "shared", False, seed=22)
    a, ws = a.detach(), [w.detach() for w in ws]
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        out = mixing.mixed_depthwise(v, a, ws, tables)
    assert all(t.data_ptr() != v.data_ptr() for t in saved)
    up = torch.randn(out.shape, dtype=out.dtype, generator=torch.Generator().manual_seed(3))
    ref = _reference(v, a, ws, tables, None)
    torch.testing.assert_close(torch.autograd.grad(out, v, up)[0], torch.autograd.grad(ref, v, up)[0])
