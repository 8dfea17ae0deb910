"""Independent truth for the sparse layers: densify, run torch's dense conv3d, sample back."""

import torch


def random_coords(batch: int, grid: int, stride: int, density: float, seed: int) -> torch.Tensor:
    """Unique int32 [N, 4] (batch, x, y, z), spatial coords multiples of `stride` in [0, grid*stride)."""
    g = torch.Generator().manual_seed(seed)
    occ = torch.rand(batch, grid, grid, grid, generator=g) < density
    idx = occ.nonzero()
    idx[:, 1:] *= stride
    perm = torch.randperm(idx.shape[0], generator=g)  # rows in no particular order
    return idx[perm].to(torch.int32)


def densify(feats: torch.Tensor, coords: torch.Tensor, stride: int, grid: int, batch: int) -> torch.Tensor:
    """[N, C] features at coords -> [B, C, G, G, G] dense grid in stride units (differentiable)."""
    c = coords.long()
    dense = feats.new_zeros(batch, grid, grid, grid, feats.shape[1])
    dense = dense.index_put((c[:, 0], c[:, 1] // stride, c[:, 2] // stride, c[:, 3] // stride), feats)
    return dense.permute(0, 4, 1, 2, 3)


def sample(dense: torch.Tensor, coords: torch.Tensor, stride: int) -> torch.Tensor:
    """[B, C, G, G, G] -> [N, C] at coords (in stride units of the grid)."""
    c = coords.long()
    return dense.permute(0, 2, 3, 4, 1)[c[:, 0], c[:, 1] // stride, c[:, 2] // stride, c[:, 3] // stride]


def canonical_to_conv3d(weight: torch.Tensor, k: int) -> torch.Tensor:
    """[K, Cin, Cout] (x slowest, z fastest) -> conv3d weight [Cout, Cin, k, k, k]."""
    return weight.permute(2, 1, 0).reshape(weight.shape[2], weight.shape[1], k, k, k)


def canonical_to_conv_transpose3d(weight: torch.Tensor) -> torch.Tensor:
    """[8, Cin, Cout] -> conv_transpose3d weight [Cin, Cout, 2, 2, 2]."""
    return weight.permute(1, 2, 0).reshape(weight.shape[1], weight.shape[2], 2, 2, 2)


def leaf(n: int, c: int, seed: int) -> torch.Tensor:
    """Seeded float64 [n, c] features that require grad."""
    return torch.randn(n, c, dtype=torch.float64, generator=torch.Generator().manual_seed(seed)).requires_grad_()


def assert_same_value_and_grads(out, ref, leaves, ref_leaves):
    """out == ref, and so are the gradients of the same upstream w.r.t. leaves and ref_leaves."""
    torch.testing.assert_close(out, ref)
    up = torch.randn_like(ref)
    for g, r in zip(torch.autograd.grad(out, leaves, up), torch.autograd.grad(ref, ref_leaves, up)):
        torch.testing.assert_close(g, r)


def assert_submanifold_matches_conv3d(layer, feats, coords, out, stride, kernel, dilation, grid, batch):
    """`out` = the sparse SubMConv3d `layer` applied to float64 leaf `feats` [N, cin] at `coords`
    [N, 4]; it must equal torch's dense conv3d on a `grid`^3 box, values and gradients."""
    dfeats = feats.detach().clone().requires_grad_()
    w = layer.weight.detach().clone().requires_grad_()
    bias = None if layer.bias is None else layer.bias.detach()
    dense = torch.nn.functional.conv3d(densify(dfeats, coords, stride, grid, batch), canonical_to_conv3d(w, kernel),
                                       bias, padding=(kernel // 2) * dilation, dilation=dilation)
    assert_same_value_and_grads(out, sample(dense, coords, stride), (feats, layer.weight), (dfeats, w))


def assert_down_up_matches_dense(grid):
    """DownConv3d(3->4) then UpConv3d(4->2) on a 2-sample cloud in a (2*grid)^3 box equal the dense
    conv3d / conv_transpose3d pair (stride 2), values and gradients, in float64."""
    from lib.sparse import SparseTensor
    from lib.sparse import nn as snn
    fine = random_coords(2, 2 * grid, 1, 0.1, seed=9)
    feats = leaf(len(fine), 3, 2)
    down, up = snn.DownConv3d(3, 4).double(), snn.UpConv3d(4, 2).double()
    y = down(SparseTensor(feats, fine, engine="torch"))
    z = up(y)
    dfeats = feats.detach().clone().requires_grad_()
    wd = down.weight.detach().clone().requires_grad_()
    wu = up.weight.detach().clone().requires_grad_()
    dense_y = torch.nn.functional.conv3d(densify(dfeats, fine, 1, 2 * grid, 2), canonical_to_conv3d(wd, 2), stride=2)
    # keep only the occupied coarse cells, as the sparse down conv does, before going back up
    mask = densify(torch.ones(len(y), 1, dtype=torch.float64), y.coords, 2, grid, 2)
    dense_z = torch.nn.functional.conv_transpose3d(dense_y * mask, canonical_to_conv_transpose3d(wu), stride=2)
    assert_same_value_and_grads(z.feats, sample(dense_z, fine, 1), (feats, down.weight, up.weight),
                                 (dfeats, wd, wu))


def gathered_aggregate(v, nbr, a, w):
    """The [N, K, C] reference of a neighbourhood sum: gather every pair of nbr [N, K], zero the
    empty ones, weight by a [N or 1, K or 1, H] (head(c) = c // (C // H)) and w [K, C] (or None),
    sum over K."""
    n, k = nbr.shape
    c, h = v.shape[1], a.shape[2]
    pairs = v[nbr.clamp(min=0)] * (nbr >= 0).unsqueeze(-1)  # [N, K, C]
    weights = a.expand(n, k, h).repeat_interleave(c // h, dim=2)
    if w is not None:
        weights = weights * w
    return (pairs * weights).sum(1)
