"""The torch engine's CPU path cut into many pair chunks: the chunks partition the kernel map, and
convolutions through tiny chunks still equal torch's dense conv3d (float64), forward and gradients."""

import pytest
import torch

from lib.sparse import SparseTensor
from lib.sparse import nn as snn
from lib.sparse.engines import torch_engine
from tests.sparse.dense_ref import (assert_down_up_matches_dense, assert_submanifold_matches_conv3d, leaf,
                                    random_coords)

GRID = 8


@pytest.fixture(params=[1, 2], ids=["1thread", "2threads"])
def tiny_chunks(request, monkeypatch):
    # 50 pairs per chunk: many chunks, most offsets absent from some of them;
    # with 2 torch threads the chunks are split between two Python threads (disjoint output rows,
    # per-thread weight gradients summed), with 1 they run inline
    monkeypatch.setattr(torch_engine, "PAIRS_PER_CHUNK", 50)
    threads = torch.get_num_threads()
    torch.set_num_threads(request.param)
    yield
    torch.set_num_threads(threads)


def test_chunks_partition_the_pairs_by_output_row():
    coords = random_coords(2, GRID, 1, 0.3, seed=3)
    kmap = SparseTensor(torch.zeros(len(coords), 1), coords).ctx.kernel_map(1, 3, 1)
    chunks = kmap.chunks(7, torch.float32)
    assert len(chunks) > 10
    seen = []
    for c in chunks:
        assert c.out_idx.min() >= c.r0 and c.out_idx.max() < c.r1
        dense = c.scatter.to_dense()
        assert torch.equal(dense.sum(1), torch.bincount(c.out_idx - c.r0, minlength=c.r1 - c.r0).float())
        for k, a, b in c.segments:
            seen += [(k, i, o) for i, o in zip(c.in_idx[a:b].tolist(), c.out_idx[a:b].tolist())]
            assert torch.equal(dense[c.out_idx[a:b] - c.r0, torch.arange(a, b)], torch.ones(b - a))
    expect = [(k, i, o) for k in range(kmap.volume) if k != kmap.center
              for i, o in zip(kmap.in_idx[k].tolist(), kmap.out_idx[k].tolist())]
    assert sorted(seen) == sorted(expect)
    assert kmap.chunks(7, torch.float32) is chunks


@pytest.mark.parametrize("kernel,dilation,stride", [(3, 1, 1), (3, 2, 2), (5, 1, 1)])
def test_submanifold_in_tiny_chunks_matches_conv3d(tiny_chunks, kernel, dilation, stride):
    coords = random_coords(2, GRID, stride, 0.3, seed=kernel + dilation)
    feats = leaf(len(coords), 3, 1)
    layer = snn.SubMConv3d(3, 4, kernel, dilation).double()
    x = SparseTensor(feats, coords, stride=stride, engine="torch")
    out = layer(x).feats
    assert len(torch_engine._chunks(x.ctx.kernel_map(stride, kernel, dilation), layer.weight)) > 5
    assert_submanifold_matches_conv3d(layer, feats, coords, out, stride, kernel, dilation, GRID, 2)


def test_down_and_up_in_tiny_chunks_match_dense(tiny_chunks):
    assert_down_up_matches_dense(GRID)
