"""ConvBNReLU layers whose activation is not stored for backward but recomputed from the BN input.

A ConvBNReLU stores two [N, C] tensors for backward: the BN input (kept by BatchNorm) and the
activation (kept by the ReLU and by whatever reads it next: a linear layer, an aggregation). The
activation is relu(batch_norm(BN input)), elementwise and cheap, so it can be recomputed from the
tensor BN keeps anyway; the maths does not change (same values and gradients, running statistics
updated once, in the forward pass).
"""
import torch
import torch.nn.functional as F
from torch.autograd.graph import saved_tensors_hooks

_RECOMPUTE = object()


def conv_bn_relu_then(layer, x, consumer):
    """consumer(layer(x)) for layer = Sequential(conv, snn.BatchNorm, snn.ReLU), without storing the
    activation for backward.

    x: SparseTensor; consumer: SparseTensor -> anything (its autograd graph built here). Where the
    ReLU or consumer saves the activation [N, C] for backward, a marker is saved instead and the
    activation is recomputed in backward from the BN input: batch statistics in training (running
    statistics untouched), running ones in evaluation. Views or casts of the activation that the
    consumer saves are stored as usual.
    """
    conv, norm, _ = layer
    pre = conv(x)
    bn = norm.module
    out = bn(pre.feats)  # updates the running statistics, once
    key = (out.data_ptr(), out.shape, out.dtype)

    def recompute():
        batch_stats = bn.training or bn.running_mean is None
        with torch.no_grad():
            return F.relu_(F.batch_norm(pre.feats, None if batch_stats else bn.running_mean,
                                        None if batch_stats else bn.running_var, bn.weight, bn.bias,
                                        batch_stats, 0.0, bn.eps))

    def pack(t):
        return _RECOMPUTE if (t.data_ptr(), t.shape, t.dtype) == key else t

    def unpack(saved):
        return recompute() if saved is _RECOMPUTE else saved

    with saved_tensors_hooks(pack, unpack):
        return consumer(pre.replace(F.relu_(out)))
