"""Serialization: points ordered along space-filling curves of their grid cells (PTv3).

Codes are int64: the scene index above 3 * depth curve bits, so one sort orders a whole batch
scene by scene. Orders: "z" (Morton, bits interleaved x over y over z), "hilbert" (Skilling's
transform of the axes to the transposed Hilbert index, then the same interleave), and their
"-trans" variants, which swap x and y before encoding.
"""
import torch

ORDERS = ("z", "z-trans", "hilbert", "hilbert-trans")


def _depth(grid_coord: torch.Tensor) -> int:
    top = int(grid_coord.max()) if len(grid_coord) else 0
    return max(1, top.bit_length())


def _interleave(x: torch.Tensor, y: torch.Tensor, z: torch.Tensor, depth: int) -> torch.Tensor:
    code = torch.zeros_like(x)
    for bit in range(depth):
        code |= ((x >> bit) & 1) << (3 * bit + 2)
        code |= ((y >> bit) & 1) << (3 * bit + 1)
        code |= ((z >> bit) & 1) << (3 * bit)
    return code


def zorder_encode(grid_coord: torch.Tensor, depth: int) -> torch.Tensor:
    """int64 [N]: Morton codes of non-negative cells grid_coord [N, 3] < 2^depth."""
    g = grid_coord.long()
    return _interleave(g[:, 0], g[:, 1], g[:, 2], depth)


def hilbert_encode(grid_coord: torch.Tensor, depth: int) -> torch.Tensor:
    """int64 [N]: Hilbert indices of non-negative cells grid_coord [N, 3] < 2^depth
    (J. Skilling, "Programming the Hilbert curve", AIP Conf. Proc. 707, 2004)."""
    x = [grid_coord[:, i].long().clone() for i in range(3)]
    q = 1 << (depth - 1)
    while q > 1:  # undo the excess work of the recursive construction, top bit first
        p = q - 1
        for i in range(3):
            high = (x[i] & q) != 0
            t = (x[0] ^ x[i]) & p
            if i == 0:
                x[0] = torch.where(high, x[0] ^ p, x[0])
            else:
                x[0], x[i] = torch.where(high, x[0] ^ p, x[0] ^ t), torch.where(high, x[i], x[i] ^ t)
        q >>= 1
    for i in (1, 2):  # Gray encode
        x[i] = x[i] ^ x[i - 1]
    t = torch.zeros_like(x[0])
    q = 1 << (depth - 1)
    while q > 1:
        t = torch.where((x[2] & q) != 0, t ^ (q - 1), t)
        q >>= 1
    return _interleave(x[0] ^ t, x[1] ^ t, x[2] ^ t, depth)


def encode(grid_coord: torch.Tensor, batch: torch.Tensor, order: str, depth: int = None) -> torch.Tensor:
    """int64 [N]: (scene << 3 * depth) | curve code of grid_coord [N, 3] for one of ORDERS."""
    if order not in ORDERS:
        raise ValueError(f"unknown serialization order {order!r}; expected one of {ORDERS}")
    depth = depth or _depth(grid_coord)
    g = grid_coord.long()
    if order.endswith("-trans"):
        g = g[:, [1, 0, 2]]
    curve = zorder_encode(g, depth) if order.startswith("z") else hilbert_encode(g, depth)
    return (batch.long() << (3 * depth)) | curve


def serialize(grid_coord: torch.Tensor, batch: torch.Tensor, orders=ORDERS):
    """codes, order, inverse: int64 [len(orders), N] each; row `order[i]` lists the points along
    curve i (scene by scene) and `inverse[i]` puts a serialized sequence back in input order."""
    depth = _depth(grid_coord)
    codes = torch.stack([encode(grid_coord, batch, o, depth) for o in orders])
    order = torch.argsort(codes, dim=1)
    inverse = torch.empty_like(order).scatter_(1, order, torch.arange(order.shape[1], device=order.device)
                                               .expand_as(order).contiguous())
    return codes, order, inverse
