"""lib.sparse.nn.subm_conv_many (torch engine: convolutions reading one input as one op) against
torch's dense conv3d on the densified grid, float64: every output and every gradient, with
convolutions that share a map (one gather per chunk), narrow outputs (the transposed GEMMs),
unsorted rows (the maps' row orders) and a summed gradient of the shared input."""
import pytest
import torch
import torch.nn.functional as F

from lib.sparse import KernelRegion, SparseTensor
from lib.sparse import nn as snn
from lib.sparse.engines import torch_engine
from tests.sparse.dense_ref import canonical_to_conv3d, densify, leaf, random_coords, sample

GRID = 6
# (kernel, dilation, cout): two on the same map, wide (cout > cin) and narrow (cout < cin) outputs
CONVS = [(3, 1, 7), (3, 1, 2), (3, 2, 3), (1, 1, 4), (5, 1, 1)]


def _dense(feats, weights, coords, batch):
    dense_in = densify(feats, coords, 1, GRID, batch)
    return [sample(F.conv3d(dense_in, canonical_to_conv3d(w, k), padding=(k // 2) * d, dilation=d), coords, 1)
            for w, (k, d, _) in zip(weights, CONVS)]


@pytest.mark.parametrize("batch", [1, 2])
@pytest.mark.parametrize("chunk", [5, 16384], ids=["many_chunks", "one_chunk"])
def test_matches_dense_conv3d_in_values_and_every_gradient(monkeypatch, batch, chunk):
    monkeypatch.setattr(torch_engine, "PAIRS_PER_CHUNK", chunk)
    coords = random_coords(batch, GRID, 1, 0.4, seed=31 + batch)  # rows unsorted: maps carry row orders
    cin = 5
    feats = leaf(len(coords), cin, 3)
    weights = [leaf(k ** 3 * cin, cout, 10 + i).detach().view(k ** 3, cin, cout).requires_grad_()
               for i, (k, _, cout) in enumerate(CONVS)]
    x = SparseTensor(feats, coords, engine="torch")
    outs = snn.subm_conv_many(x, weights, [KernelRegion.cube(k, d) for k, d, _ in CONVS])
    dfeats = feats.detach().clone().requires_grad_()
    dweights = [w.detach().clone().requires_grad_() for w in weights]
    refs = _dense(dfeats, dweights, coords, batch)
    ups = [torch.randn(r.shape, dtype=r.dtype, generator=torch.Generator().manual_seed(i)) for i, r in enumerate(refs)]
    for out, ref in zip(outs, refs):
        torch.testing.assert_close(out, ref)
    got = torch.autograd.grad(outs, [feats, *weights], ups)
    want = torch.autograd.grad(refs, [dfeats, *dweights], ups)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w)


def test_unused_outputs_take_no_part_in_backward():
    """Gradients flow from the outputs used only (autograd hands the op None for the others)."""
    coords = random_coords(1, GRID, 1, 0.4, seed=40)
    feats = leaf(len(coords), 4, 4)
    weights = [leaf(27 * 4, c, 20 + c).detach().view(27, 4, c).requires_grad_() for c in (3, 2)]
    x = SparseTensor(feats, coords, engine="torch")
    first, _ = snn.subm_conv_many(x, weights, [KernelRegion.cube(3), KernelRegion.cube(3, 2)])
    grads = torch.autograd.grad(first.sum(), [feats, *weights], allow_unused=True)
    single = snn.subm_conv(SparseTensor(feats, coords, engine="torch"), weights[0], KernelRegion.cube(3))
    want = torch.autograd.grad(single.sum(), [feats, weights[0]])
    torch.testing.assert_close(grads[0], want[0])
    torch.testing.assert_close(grads[1], want[1])
    assert grads[2] is None
