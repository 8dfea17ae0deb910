"""Serialized patch attention (models/ptv3.py) against attention written out by hand."""
import math

import torch

from lib.pointops import patch_partition, serialize
from lib.pointops.grid import offset_to_batch
from models.ptv3 import SerializedAttention


def manual_attention(attn, feat):
    """Full multi-head softmax attention of the rows of feat [n, C] among themselves."""
    n, c = feat.shape
    h = attn.heads
    q, k, v = attn.qkv(feat).view(n, 3, h, c // h).unbind(1)
    out = torch.empty(n, h, c // h)
    for i in range(h):
        w = torch.softmax(q[:, i] @ k[:, i].T / math.sqrt(c // h), dim=1)
        out[:, i] = w @ v[:, i]
    return attn.proj(out.reshape(n, c))


def setup(sizes, seed=0):
    g = torch.Generator().manual_seed(seed)
    offset = torch.tensor([0] + sizes).cumsum(0)
    grid = torch.randint(0, 16, (int(offset[-1]), 3), generator=g)
    _, order, inverse = serialize(grid, offset_to_batch(offset), ("hilbert",))
    return torch.randn(int(offset[-1]), 8, generator=g), offset, order[0], inverse[0]


def test_one_patch_per_scene_is_full_attention():
    torch.manual_seed(0)
    attn = SerializedAttention(8, heads=2, patch_size=64).eval()
    feat, offset, order, inverse = setup([30, 50])  # both scenes smaller than a patch
    with torch.no_grad():
        got = attn(feat, order, inverse, offset)
        for b in range(2):
            rows = slice(int(offset[b]), int(offset[b + 1]))
            assert torch.allclose(got[rows], manual_attention(attn, feat[rows]), atol=1e-5)


def test_patches_of_a_large_scene_attend_within_themselves():
    torch.manual_seed(1)
    attn = SerializedAttention(8, heads=2, patch_size=16).eval()
    feat, offset, order, inverse = setup([40, 16, 7])
    with torch.no_grad():
        got = attn(feat, order, inverse, offset)
        seq = feat[order]
        want = torch.empty_like(seq)
        # scene 0 (40 rows): patches at 0, 16 and 24 (the last one full, overlapping); rows 32..39
        # come from the last patch, rows 16..31 from the second
        p = [manual_attention(attn, seq[s:s + 16]) for s in (0, 16, 24)]
        want[0:16], want[16:32], want[32:40] = p[0], p[1], p[2][8:16]
        want[40:56] = manual_attention(attn, seq[40:56])
        want[56:63] = manual_attention(attn, seq[56:63])
        assert torch.allclose(got, want[inverse], atol=1e-5)


def test_partition_owner_covers_every_row_once():
    p = patch_partition(torch.tensor([0, 5, 7, 17, 17]), 4)
    assert p.full.tolist() == [[0, 1, 2, 3], [1, 2, 3, 4], [7, 8, 9, 10], [11, 12, 13, 14], [13, 14, 15, 16]]
    assert p.small.tolist() == [[5, 6]]
    flat = torch.cat([p.full.flatten(), p.small.flatten()])
    assert torch.equal(flat[p.owner], torch.arange(17))  # each row's output slot holds that row
