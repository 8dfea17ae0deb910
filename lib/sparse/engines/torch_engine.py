"""The pure-PyTorch engine: gather -> GEMM -> scatter-add per kernel offset (CPU and CUDA).

No [N, K, C] tensor is ever built: each offset gathers only its own pair rows. The autograd
Functions save the inputs and the map, not the gathered copies, and the backward pass runs the
same pairs transposed.
"""

import torch

from ..kernel_map import KernelMap


def _scatter_add(dst: torch.Tensor, idx: torch.Tensor, src: torch.Tensor, kmap: KernelMap) -> None:
    """dst[idx[p]] += src[p] for every p (idx may repeat)."""
    if dst.device.type == "cpu" and dst.dtype in (torch.float32, torch.float64):
        dst.addmm_(kmap.scatter_matrix(idx, dst.shape[0], dst.dtype), src)
    else:
        dst.index_add_(0, idx, src)  # CUDA: atomics, already fast


def _positions(rows_tensor: torch.Tensor, order) -> torch.Tensor:
    """Rows -> sorted-key positions (the map's index space); identity when rows are sorted."""
    return rows_tensor.contiguous() if order is None else rows_tensor.index_select(0, order)


def _max_pairs(kmap: KernelMap) -> int:
    return max((i.numel() for k, i in enumerate(kmap.in_idx) if k != kmap.center), default=0)


class _SparseConv(torch.autograd.Function):
    """out[out_idx[k]] += feats[in_idx[k]] @ weight[k]; feats [N_in, Cin], weight [K, Cin, Cout].

    Gathered rows and GEMM results go through two buffers reused by every offset, so one call
    allocates O(max pairs per offset * C), never O(all pairs * C).
    """

    @staticmethod
    def forward(ctx, feats, weight, kmap: KernelMap):
        xs = _positions(feats, kmap.in_order)
        ctx.save_for_backward(xs, weight)
        ctx.kmap = kmap
        if kmap.center is not None:
            out = torch.mm(xs, weight[kmap.center])
        else:
            out = xs.new_zeros(kmap.n_out, weight.shape[2])
        m_max = _max_pairs(kmap)
        gathered = xs.new_empty(m_max, weight.shape[1])
        product = xs.new_empty(m_max, weight.shape[2])
        for k in range(kmap.volume):
            src = kmap.in_idx[k]
            if k == kmap.center or src.numel() == 0:
                continue
            m = src.numel()
            torch.index_select(xs, 0, src, out=gathered[:m])
            torch.mm(gathered[:m], weight[k], out=product[:m])
            _scatter_add(out, kmap.out_idx[k], product[:m], kmap)
        return out if kmap.out_order is None else out.index_select(0, kmap.out_inverse)

    @staticmethod
    def backward(ctx, grad_out):
        xs, weight = ctx.saved_tensors
        kmap = ctx.kmap
        gs = _positions(grad_out, kmap.out_order)
        need_x, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_x = grad_w = None
        cin, cout = weight.shape[1], weight.shape[2]
        if need_w:
            grad_w = torch.zeros_like(weight)
            if kmap.center is not None:
                torch.mm(xs.t(), gs, out=grad_w[kmap.center])
        if need_x:
            if kmap.center is not None:
                grad_x = torch.mm(gs, weight[kmap.center].t())
            else:
                grad_x = xs.new_zeros(kmap.n_in, cin)
        m_max = _max_pairs(kmap)
        g_rows, x_rows, product = gs.new_empty(m_max, cout), xs.new_empty(m_max, cin), xs.new_empty(m_max, cin)
        for k in range(kmap.volume):
            src = kmap.in_idx[k]
            if k == kmap.center or src.numel() == 0:
                continue
            m = src.numel()
            g = torch.index_select(gs, 0, kmap.out_idx[k], out=g_rows[:m])
            if need_w:
                x = torch.index_select(xs, 0, src, out=x_rows[:m])
                torch.mm(x.t(), g, out=grad_w[k])
            if need_x:
                torch.mm(g, weight[k].t(), out=product[:m])
                _scatter_add(grad_x, src, product[:m], kmap)
        if need_x and kmap.in_order is not None:
            grad_x = grad_x.index_select(0, kmap.in_inverse)
        return grad_x, grad_w, None


class _DepthwiseConv(torch.autograd.Function):
    """out[out_idx[k]] += feats[in_idx[k]] * weight[k]; feats [N, C], weight [K, C]."""

    @staticmethod
    def forward(ctx, feats, weight, kmap: KernelMap):
        xs = _positions(feats, kmap.in_order)
        ctx.save_for_backward(xs, weight)
        ctx.kmap = kmap
        out = xs * weight[kmap.center]
        for k in range(kmap.volume):
            if k == kmap.center or kmap.in_idx[k].numel() == 0:
                continue
            _scatter_add(out, kmap.out_idx[k], xs.index_select(0, kmap.in_idx[k]).mul_(weight[k]), kmap)
        return out if kmap.out_order is None else out.index_select(0, kmap.out_inverse)

    @staticmethod
    def backward(ctx, grad_out):
        xs, weight = ctx.saved_tensors
        kmap = ctx.kmap
        gs = _positions(grad_out, kmap.out_order)
        grad_x = gs * weight[kmap.center]
        grad_w = torch.zeros_like(weight)
        grad_w[kmap.center] = (xs * gs).sum(0)
        for k in range(kmap.volume):
            if k == kmap.center or kmap.in_idx[k].numel() == 0:
                continue
            src = kmap.in_idx[k]
            g = gs.index_select(0, kmap.out_idx[k])
            grad_w[k] = (xs.index_select(0, src) * g).sum(0)
            _scatter_add(grad_x, src, g.mul_(weight[k]), kmap)
        if kmap.in_order is not None:
            grad_x = grad_x.index_select(0, kmap.in_inverse)
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
