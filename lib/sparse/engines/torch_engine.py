"""The pure-PyTorch engine: gather -> GEMM -> scatter-add per kernel offset (CPU and CUDA).

No [N, K, C] tensor is ever built: each offset gathers only its own pair rows. The autograd
Functions save the inputs and the map, not the gathered copies, and the backward pass runs the
same pairs transposed.
"""

import torch

from ..kernel_map import KernelMap


class _SparseConv(torch.autograd.Function):
    """out[out_idx[k]] += feats[in_idx[k]] @ weight[k]; feats [N_in, Cin], weight [K, Cin, Cout]."""

    @staticmethod
    def forward(ctx, feats, weight, kmap: KernelMap):
        ctx.save_for_backward(feats, weight)
        ctx.kmap = kmap
        if kmap.center is not None:
            out = torch.mm(feats, weight[kmap.center])
        else:
            out = feats.new_zeros(kmap.n_out, weight.shape[2])
        for k in range(kmap.volume):
            if k == kmap.center:
                continue
            src = kmap.in_idx[k]
            if src.numel() == 0:
                continue
            out.index_add_(0, kmap.out_idx[k], torch.mm(feats.index_select(0, src), weight[k]))
        return out

    @staticmethod
    def backward(ctx, grad_out):
        feats, weight = ctx.saved_tensors
        kmap = ctx.kmap
        grad_out = grad_out.contiguous()
        need_x, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_x = grad_w = None
        if need_w:
            grad_w = torch.zeros_like(weight)
        if need_x:
            if kmap.center is not None:
                grad_x = torch.mm(grad_out, weight[kmap.center].t())
            else:
                grad_x = torch.zeros_like(feats)
        if kmap.center is not None and need_w:
            torch.mm(feats.t(), grad_out, out=grad_w[kmap.center])
        for k in range(kmap.volume):
            if k == kmap.center:
                continue
            src = kmap.in_idx[k]
            if src.numel() == 0:
                continue
            g = grad_out.index_select(0, kmap.out_idx[k])
            if need_w:
                torch.mm(feats.index_select(0, src).t(), g, out=grad_w[k])
            if need_x:
                grad_x.index_add_(0, src, torch.mm(g, weight[k].t()))
        return grad_x, grad_w, None


class _DepthwiseConv(torch.autograd.Function):
    """out[out_idx[k]] += feats[in_idx[k]] * weight[k]; feats [N, C], weight [K, C]."""

    @staticmethod
    def forward(ctx, feats, weight, kmap: KernelMap):
        ctx.save_for_backward(feats, weight)
        ctx.kmap = kmap
        out = feats * weight[kmap.center]
        for k in range(kmap.volume):
            if k == kmap.center or kmap.in_idx[k].numel() == 0:
                continue
            out.index_add_(0, kmap.out_idx[k], feats.index_select(0, kmap.in_idx[k]) * weight[k])
        return out

    @staticmethod
    def backward(ctx, grad_out):
        feats, weight = ctx.saved_tensors
        kmap = ctx.kmap
        grad_x = grad_out * weight[kmap.center]
        grad_w = torch.zeros_like(weight)
        grad_w[kmap.center] = (feats * grad_out).sum(0)
        for k in range(kmap.volume):
            if k == kmap.center or kmap.in_idx[k].numel() == 0:
                continue
            src = kmap.in_idx[k]
            g = grad_out.index_select(0, kmap.out_idx[k])
            grad_w[k] = (feats.index_select(0, src) * g).sum(0)
            grad_x.index_add_(0, src, g * weight[k])
        return grad_x, grad_w, None


def conv(feats: torch.Tensor, weight: torch.Tensor, kmap: KernelMap) -> torch.Tensor:
    """Sparse convolution by a kernel map: feats [N_in, Cin], weight [K, Cin, Cout] -> [N_out, Cout]."""
    return _SparseConv.apply(feats, weight, kmap)


def depthwise(feats: torch.Tensor, weight: torch.Tensor, kmap: KernelMap) -> torch.Tensor:
    """Channelwise sparse convolution: feats [N, C], weight [K, C] -> [N, C]."""
    return _DepthwiseConv.apply(feats, weight, kmap)


class TorchEngine:
    """Engine interface used by lib.sparse.nn; every method returns features in ctx row order."""

    name = "torch"

    def subm_conv(self, x, weight, kernel_size: int, dilation: int):
        return conv(x.feats, weight, x.ctx.kernel_map(x.stride, kernel_size, dilation))

    def down_conv(self, x, weight):
        return conv(x.feats, weight, x.ctx.down_map(x.stride))

    def up_conv(self, x, weight):
        return conv(x.feats, weight, x.ctx.down_map(x.stride // 2).transposed())

    def depthwise_conv(self, x, weight, kernel_size: int, dilation: int):
        return depthwise(x.feats, weight, x.ctx.kernel_map(x.stride, kernel_size, dilation))
