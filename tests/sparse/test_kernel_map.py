"""Kernel-map internals: the CSR scatter-add against a plain loop, offsets and key coding."""

import torch

from lib.sparse.coords import KeyCoder
from lib.sparse.kernel_map import KernelMap, kernel_offsets


def test_scatter_matrix_adds_like_a_loop_with_repeats_and_any_order():
    idx = torch.tensor([4, 0, 4, 2, 9, 0, 0])
    src = torch.randn(len(idx), 3, dtype=torch.float64)
    kmap = KernelMap([idx], [idx], 10, 10)
    dst = torch.zeros(10, 3, dtype=torch.float64)
    dst.addmm_(kmap.scatter_matrix(idx, 10, torch.float64), src)
    expect = torch.zeros(10, 3, dtype=torch.float64)
    for p, i in enumerate(idx.tolist()):
        expect[i] += src[p]
    torch.testing.assert_close(dst, expect)
    assert kmap.scatter_matrix(idx, 10, torch.float64) is kmap.scatter_matrix(idx, 10, torch.float64)


def test_canonical_offsets_x_slowest_z_fastest():
    assert kernel_offsets(3)[:4] == [(-1, -1, -1), (-1, -1, 0), (-1, -1, 1), (-1, 0, -1)]
    assert kernel_offsets(3)[13] == (0, 0, 0)
    assert kernel_offsets(2) == [(0, 0, 0), (0, 0, 1), (0, 1, 0), (0, 1, 1),
                                 (1, 0, 0), (1, 0, 1), (1, 1, 0), (1, 1, 1)]


def test_key_code_round_trips_and_shifts_by_offsets():
    coords = torch.tensor([[0, -5, 3, 7], [2, 100, -40, 0], [1, 0, 0, 0]], dtype=torch.int32)
    coder = KeyCoder(coords)
    keys = coder.encode(coords)
    assert torch.equal(coder.decode(keys), coords)
    moved = coords.clone()
    moved[:, 1:] += torch.tensor([3, -2, 1], dtype=torch.int32)
    assert torch.equal(coder.encode(moved), keys + coder.delta((3, -2, 1)))
    # key order is (batch, x, y, z) lexicographic order
    assert torch.argsort(keys).tolist() == [0, 2, 1]
