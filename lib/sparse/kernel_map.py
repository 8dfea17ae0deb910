"""Kernel maps: for each kernel offset, the (input row, output row) pairs it connects.

Offsets are enumerated in the canonical order (x slowest, z fastest, each in -r..r, or 0..1 for
the k2s2 down/up convolutions), matching the weight layout [K, Cin, Cout].
"""

import itertools

import torch

from .coords import CoordSet, KeyCoder


def kernel_offsets(kernel_size: int):
    """Canonical offsets of a cubic kernel, in kernel-step units: list of K (dx, dy, dz) tuples."""
    if kernel_size == 2:
        rng = range(0, 2)
    elif kernel_size >= 1 and kernel_size % 2 == 1:
        r = kernel_size // 2
        rng = range(-r, r + 1)
    else:
        raise ValueError(f"kernel_size must be odd (submanifold) or 2 (down/up), got {kernel_size}")
    return list(itertools.product(rng, rng, rng))


class KernelMap:
    """Pairs per offset: out[out_idx[k]] += in[in_idx[k]] @ W[k].

    in_idx, out_idx: lists of K int64 tensors (None at the identity centre of a submanifold map,
    where the offset is the plain GEMM out += in @ W[centre]). n_in / n_out: row counts.
    """

    def __init__(self, in_idx, out_idx, n_in: int, n_out: int, center=None):
        self.in_idx = in_idx
        self.out_idx = out_idx
        self.n_in = n_in
        self.n_out = n_out
        self.center = center

    @property
    def volume(self) -> int:
        return len(self.in_idx)

    def transposed(self) -> "KernelMap":
        """The same pairs read backwards: the map of the transposed convolution."""
        return KernelMap(self.out_idx, self.in_idx, self.n_out, self.n_in, self.center)

    def num_pairs(self) -> int:
        return sum(self.n_in if i is None else i.numel() for i in self.in_idx)


def submanifold_map(cs: CoordSet, coder: KeyCoder, stride: int, kernel_size: int, dilation: int) -> KernelMap:
    """Map of a submanifold convolution (outputs = inputs) on one coordinate set.

    Offset o pairs each row i with the row j at c_i + o * dilation * stride. The pairs of -o are
    those of +o reversed, so only the first half of the offsets is searched.
    """
    offsets = kernel_offsets(kernel_size)
    vol = len(offsets)
    center = vol // 2
    step = dilation * stride
    n = len(cs)
    in_idx = [None] * vol
    out_idx = [None] * vol
    for k in range(center):
        dx, dy, dz = offsets[k]
        hit, row = cs.lookup(cs.keys + coder.delta((dx * step, dy * step, dz * step)))
        i = hit.nonzero().squeeze(1)
        j = row[i]
        # offset k: output i reads input j = i + o; offset vol-1-k (= -o): output j reads input i
        in_idx[k], out_idx[k] = j, i
        in_idx[vol - 1 - k], out_idx[vol - 1 - k] = i, j
    return KernelMap(in_idx, out_idx, n, n, center=center)


def down_map(parent: torch.Tensor, child: torch.Tensor, n_coarse: int) -> KernelMap:
    """Map of the k2s2 down convolution from `downsample`'s parent/child arrays (each fine row once)."""
    order = torch.argsort(child, stable=True)
    counts = torch.bincount(child, minlength=8).tolist()
    in_idx = list(torch.split(order, counts))
    out_idx = [parent[i] for i in in_idx]
    return KernelMap(in_idx, out_idx, parent.numel(), n_coarse)
