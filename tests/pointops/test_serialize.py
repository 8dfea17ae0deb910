"""Serialization codes against references written here from the definitions."""
import itertools

import pytest
import torch

from lib.pointops import ORDERS, encode, hilbert_encode, serialize, zorder_encode


def morton_reference(x, y, z, depth):
    """Bit b of x goes to bit 3b + 2 of the code, y to 3b + 1, z to 3b."""
    return sum(((x >> b) & 1) << (3 * b + 2) | ((y >> b) & 1) << (3 * b + 1) | ((z >> b) & 1) << (3 * b)
               for b in range(depth))


def hilbert_decode_reference(index, depth):
    """Cell of Hilbert index `index`: split the index into the transposed form (bit 3b + 2 - i of the
    index is bit b of axis i), then Skilling's TransposetoAxes: Gray decode, then undo the
    rotations and reflections from the lowest level up. Scalar Python, the inverse direction of
    the encoder under test."""
    x = [0, 0, 0]
    for b in range(depth):
        for i in range(3):
            x[i] |= ((index >> (3 * b + 2 - i)) & 1) << b
    t = x[2] >> 1
    for i in (2, 1):
        x[i] ^= x[i - 1]
    x[0] ^= t
    q = 2
    while q != 1 << depth:
        p = q - 1
        for i in (2, 1, 0):
            if x[i] & q:
                x[0] ^= p
            else:
                t = (x[0] ^ x[i]) & p
                x[0] ^= t
                x[i] ^= t
        q <<= 1
    return tuple(x)


def all_cells(depth):
    n = 1 << depth
    return torch.tensor(list(itertools.product(range(n), repeat=3)))


@pytest.mark.parametrize("depth", [1, 3, 4])
def test_zorder_matches_bit_interleaving(depth):
    cells = all_cells(depth)
    got = zorder_encode(cells, depth).tolist()
    assert got == [morton_reference(*c, depth) for c in cells.tolist()]


@pytest.mark.parametrize("depth", [1, 2, 3, 4])
def test_hilbert_is_a_unit_step_curve_matching_the_decoder(depth):
    cells = all_cells(depth)
    codes = hilbert_encode(cells, depth)
    assert sorted(codes.tolist()) == list(range(1 << (3 * depth)))  # a bijection onto 0..8^d-1
    for cell, code in zip(cells.tolist(), codes.tolist()):
        assert hilbert_decode_reference(code, depth) == tuple(cell)
    path = cells[torch.argsort(codes)]
    assert path[0].tolist() == [0, 0, 0]
    assert ((path[1:] - path[:-1]).abs().sum(1) == 1).all()  # consecutive cells are face neighbours


def test_hilbert_of_a_coarser_grid_is_the_code_shifted():
    # the curve nests: the 8 children of a cell are consecutive, so code >> 3 is the parent's code
    cells = all_cells(4)
    assert torch.equal(hilbert_encode(cells, 4) >> 3, hilbert_encode(cells // 2, 3))


def test_transposed_orders_swap_x_and_y_and_scenes_come_first():
    g = torch.Generator().manual_seed(0)
    grid = torch.randint(0, 30, (200, 3), generator=g)
    batch = torch.repeat_interleave(torch.arange(2), torch.tensor([120, 80]))
    for o in ("z", "hilbert"):
        assert torch.equal(encode(grid, batch, o + "-trans"), encode(grid[:, [1, 0, 2]], batch, o))
    codes, order, inverse = serialize(grid, batch, ORDERS)
    for i in range(len(ORDERS)):
        assert torch.equal(batch[order[i]], batch.sort().values)  # scenes stay contiguous, in order
        assert torch.equal(codes[i][order[i]], codes[i].sort().values)
        feats = torch.randn(200, 4, generator=g)
        assert torch.equal(feats[order[i]][inverse[i]], feats)  # the inverse restores input order


def test_unknown_order():
    with pytest.raises(ValueError, match="unknown serialization order"):
        encode(torch.zeros(1, 3, dtype=torch.long), torch.zeros(1, dtype=torch.long), "peano")
