"""BatchNorm + ReLU folded into an op that gathers its source features (lib.sparse.mixing).

A ConvBNReLU in front of a gathering op costs two [N, C] activations in forward (BN output, ReLU
output) and three in backward (the recomputed activation, ReLU's and BatchNorm's gradients). Folded
in, the op gathers the BN *input* x and applies relu(x * scale + shift) to each gathered piece, and
its backward turns the accumulated gradient of the activation into x's gradient in place, tile by
tile: no [N, C] tensor besides x and that one gradient buffer. Values, gradients and running
statistics are those of torch.nn.BatchNorm1d followed by ReLU (batch statistics in training, the
running ones in evaluation).
"""
from typing import NamedTuple

import torch
from torch import nn


class NormReLU(NamedTuple):
    """What relu(batch_norm(x)) needs besides x: the affine weight and bias [C] (None: none), the
    running statistics [C] (None: untracked), the update factor (momentum, or the cumulative
    1 / batches when the module's momentum is None), eps, and whether batch statistics are used."""
    weight: torch.Tensor
    bias: torch.Tensor
    running_mean: torch.Tensor
    running_var: torch.Tensor
    factor: float
    eps: float
    batch_stats: bool

    @classmethod
    def of(cls, bn: nn.modules.batchnorm._BatchNorm) -> "NormReLU":
        """The NormReLU of one forward pass of `bn`; counts the batch as bn's forward would."""
        factor = 0.0 if bn.momentum is None else bn.momentum
        if bn.training and bn.track_running_stats and bn.num_batches_tracked is not None:
            bn.num_batches_tracked.add_(1)
            factor = 1.0 / float(bn.num_batches_tracked) if bn.momentum is None else bn.momentum
        batch_stats = bn.training or (bn.running_mean is None and bn.running_var is None)
        return cls(bn.weight, bn.bias, bn.running_mean, bn.running_var, factor, bn.eps, batch_stats)


def statistics(x: torch.Tensor, norm: NormReLU, dtype: torch.dtype, tile: int):
    """(mean, invstd) [C] in dtype, from the batch x [N, C] (updating the running statistics in
    place, with the unbiased variance, as BatchNorm does) or from the running statistics.
    Batch statistics in two passes over tiles of `tile` rows (the mean, then the centred squares),
    sums in float64: on CPU many times faster than torch.var_mean over dim 0, and as exact."""
    with torch.no_grad():
        if not norm.batch_stats:
            return norm.running_mean.to(dtype), torch.rsqrt(norm.running_var.to(dtype) + norm.eps)
        n, c = x.shape
        total = torch.zeros(c, dtype=torch.float64, device=x.device)
        for r0 in range(0, n, tile):
            total += x[r0:r0 + tile].sum(0, dtype=torch.float64)
        mean = (total / max(1, n)).to(dtype)
        buf = torch.empty(min(tile, n), c, dtype=dtype, device=x.device)
        total.zero_()
        for r0 in range(0, n, tile):
            xt = x[r0:r0 + tile]
            total += torch.sub(xt, mean, out=buf[:len(xt)]).square_().sum(0, dtype=torch.float64)
        var = (total / max(1, n)).to(dtype)
        if norm.running_mean is not None:
            norm.running_mean.mul_(1 - norm.factor).add_(mean.to(norm.running_mean.dtype), alpha=norm.factor)
            unbiased = var * (n / max(1, n - 1))
            norm.running_var.mul_(1 - norm.factor).add_(unbiased.to(norm.running_var.dtype), alpha=norm.factor)
        return mean, torch.rsqrt(var + norm.eps)


def affine(weight, bias, mean, invstd):
    """(scale, shift) [C]: batch_norm(x) = x * scale + shift."""
    scale = invstd if weight is None else weight.to(invstd.dtype) * invstd
    shift = -mean * scale
    return scale, shift if bias is None else shift + bias.to(invstd.dtype)


def backward_(grad: torch.Tensor, x: torch.Tensor, norm: NormReLU, mean, invstd, tile: int, buf):
    """The gradient of the activation relu(batch_norm(x)) [N, C] becomes x's, in place, in tiles of
    `tile` rows (mean, invstd: the forward's statistics; buf: a [tile, C] scratch buffer); returns
    (grad, the norm weight's gradient, its bias's)."""
    scale, shift = affine(norm.weight, norm.bias, mean, invstd)
    n = grad.shape[0]
    sum_g = torch.zeros_like(mean)
    sum_gx = torch.zeros_like(mean)
    for r0 in range(0, n, tile):
        g, xt = grad[r0:r0 + tile], x[r0:r0 + tile]
        z = torch.mul(xt, scale, out=buf[:len(g)]).add_(shift)
        g.mul_(z.gt_(0))  # the ReLU's gradient: grad of the BN output (z becomes its 0/1 mask)
        sum_g += g.sum(0)
        sum_gx += torch.mul(g, xt, out=z).sum(0)
    grad_bias = sum_g
    grad_weight = invstd * (sum_gx - mean * sum_g)  # sum of g * x_hat
    gain = scale  # d(output)/d(x) with the statistics held
    if norm.batch_stats:  # the statistics depend on x too
        coef_x = -gain * invstd * grad_weight / n
        const = -gain * grad_bias / n - coef_x * mean
        for r0 in range(0, n, tile):
            g, xt = grad[r0:r0 + tile], x[r0:r0 + tile]
            g.mul_(gain).add_(torch.mul(xt, coef_x, out=buf[:len(g)]).add_(const))
    else:
        grad.mul_(gain)
    return grad, grad_weight, grad_bias
