"""Activations recomputed in backward instead of stored: same maths, less memory.

A ConvBNReLU stores two [N, C] tensors for backward: the BN input (kept by BatchNorm) and the
activation (kept by the ReLU and by whatever reads it next). The activation is
relu(batch_norm(BN input)), elementwise and cheap, so it can be recomputed from the tensor BN keeps
anyway. More generally `recompute_in_backward(t, fn)` makes every op run inside it that saves t for
backward save a marker instead, and call fn() for t in backward. The values, gradients and BN
running statistics (updated once, in the forward pass) do not change.
"""
import contextlib
import threading

import torch
import torch.nn.functional as F
from torch.autograd.graph import saved_tensors_hooks

_active = threading.local()  # (key, fn) of every open recompute_in_backward, innermost last


def _key(t: torch.Tensor):
    return t.data_ptr(), t.shape, t.dtype, t.device


def _pack(t):
    for key, fn in reversed(getattr(_active, "entries", [])):
        if _key(t) == key:
            return _Marker(fn)
    return t


def _unpack(saved):
    return saved.fn() if isinstance(saved, _Marker) else saved


class _Marker:
    __slots__ = ("fn",)

    def __init__(self, fn):
        self.fn = fn


@contextlib.contextmanager
def recompute_in_backward(t: torch.Tensor, fn):
    """Inside this block, an op that saves t (same storage, shape, dtype) for backward saves a marker;
    backward calls fn() (run under no_grad: it must return t's values) the first time t is read,
    and every later read gets that result. Views or
    casts of t are saved as usual. Blocks nest; the saved-tensor hooks of the innermost one see all."""
    entries = _active.__dict__.setdefault("entries", [])
    # every op that saved t reads one recomputation (an activation read by a ReLU and by the next
    # layer would otherwise be recomputed twice); it lives as long as the markers that hold it
    cache = []

    def regenerate():
        if not cache:
            with torch.no_grad():
                cache.append(fn())
        return cache[0]

    entries.append((_key(t), regenerate))
    try:
        with saved_tensors_hooks(_pack, _unpack):
            yield
    finally:
        entries.pop()


def bn_relu_again(layer, pre: torch.Tensor) -> torch.Tensor:
    """relu(batch_norm(pre)) of layer = Sequential(conv, snn.BatchNorm, snn.ReLU) as its forward
    computed it: batch statistics in training (running statistics untouched), running ones in eval."""
    bn = layer[1].module
    batch_stats = bn.training or bn.running_mean is None
    return F.relu_(F.batch_norm(pre, None if batch_stats else bn.running_mean,
                                None if batch_stats else bn.running_var, bn.weight, bn.bias,
                                batch_stats, 0.0, bn.eps))


def conv_bn_relu_then(layer, x, consumer):
    """consumer(layer(x)) for layer = Sequential(conv, snn.BatchNorm, snn.ReLU), the activation
    [N, C] not stored for backward by the ReLU or by consumer (recomputed from the BN input).

    x: SparseTensor; consumer: SparseTensor -> anything (its autograd graph built here).
    Returns (consumer's result, BN input [N, C]; None where grad is disabled)."""
    return bn_relu_then(layer, layer[0](x), consumer)


def bn_relu_then(layer, pre, consumer):
    """conv_bn_relu_then after the convolution: pre is the SparseTensor layer[0] produced."""
    _, norm, _ = layer
    if not torch.is_grad_enabled():  # nothing is saved: let the BN input go before consumer runs
        act = pre.replace(F.relu_(norm(pre).feats))
        del pre
        return consumer(act), None
    out = norm(pre).feats  # updates the running statistics, once
    with recompute_in_backward(out, lambda: bn_relu_again(layer, pre.feats)):
        return consumer(pre.replace(F.relu_(out))), pre.feats
