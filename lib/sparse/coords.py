"""Coordinate sets of a sparse tensor and their int64 keys.

Coordinates are int32 [N, 4] = (batch, x, y, z) in units of the finest voxel grid. Each row is
packed into one int64 key by a mixed-radix code whose x/y/z ranges are padded by `PAD` voxels on
both sides, so that `key(c + o) == key(c) + delta(o)` holds exactly for every offset o with
|o| <= PAD: a neighbour lookup is then a single searchsorted of shifted keys, with no aliasing.
"""

import torch

PAD = 4096  # largest neighbour reach (radius * dilation * stride) any layer may use, in voxels
ORIGIN_ALIGN = 4096  # engines that need non-negative grids shift by a multiple of every stride


class KeyCoder:
    """Mixed-radix int64 code for (batch, x, y, z) fixed for one input (one SparseContext).

    Built from the finest coordinates; every coarser set (floor(c / 2s) * 2s) stays inside the
    padded box, so all strides share the code.
    """

    def __init__(self, coords: torch.Tensor):
        if coords.ndim != 2 or coords.shape[1] != 4:
            raise ValueError(f"coords must be [N, 4] (batch, x, y, z), got shape {tuple(coords.shape)}")
        if coords.shape[0] == 0:
            raise ValueError("coords is empty: a sparse tensor needs at least one voxel")
        c = coords.to(torch.int64)
        lo = c.min(0).values.tolist()
        hi = c.max(0).values.tolist()
        if lo[0] < 0:
            raise ValueError(f"coords batch column holds a negative index ({lo[0]})")
        self.origin = torch.tensor([0, lo[1] - PAD, lo[2] - PAD, lo[3] - PAD], dtype=torch.int64,
                                   device=coords.device)
        rx, ry, rz = (hi[d] - lo[d] + 1 + 2 * PAD for d in (1, 2, 3))
        if (hi[0] + 1) * rx * ry * rz >= 2 ** 62:
            raise ValueError(f"coords span too large a box to key in int64: batch {hi[0] + 1}, "
                             f"extent {rx - 2 * PAD} x {ry - 2 * PAD} x {rz - 2 * PAD}")
        self.radix = (rx, ry, rz)
        # weights of the mixed-radix digits: key = b*wb + x*wx + y*wy + z
        self.weights = (rx * ry * rz, ry * rz, rz)

    def encode(self, coords: torch.Tensor) -> torch.Tensor:
        """[N, 4] int coordinates -> [N] int64 keys."""
        c = coords.to(torch.int64) - self.origin
        w = self.weights
        # column by column: a reduction over a dimension of size 4 is slow in torch
        return c[:, 0] * w[0] + c[:, 1] * w[1] + c[:, 2] * w[2] + c[:, 3]

    def decode(self, keys: torch.Tensor) -> torch.Tensor:
        """[N] int64 keys -> [N, 4] int32 coordinates."""
        rx, ry, rz = self.radix
        z = keys % rz
        rest = keys // rz
        y = rest % ry
        rest = rest // ry
        x = rest % rx
        b = rest // rx
        return (torch.stack([b, x, y, z], 1) + self.origin).to(torch.int32)

    def delta(self, offset) -> int:
        """Key difference of a spatial offset (dx, dy, dz) in voxels; |offset| must be <= PAD."""
        dx, dy, dz = (int(v) for v in offset)
        if max(abs(dx), abs(dy), abs(dz)) > PAD:
            raise ValueError(f"neighbour offset {offset} reaches beyond {PAD} voxels; "
                             "lower the kernel size, dilation or stride")
        _, ry, rz = self.radix
        return (dx * ry + dy) * rz + dz


class CoordSet:
    """One coordinate set: rows in a fixed order plus their keys sorted for lookups.

    coords: int32 [N, 4]; keys: int64 [N] in row order; sorted_keys: int64 [N];
    order: int64 [N] with keys[order] == sorted_keys.
    """

    def __init__(self, coords: torch.Tensor, keys: torch.Tensor, sorted_keys=None, order=None):
        self.coords = coords
        self.keys = keys
        if sorted_keys is None:
            sorted_keys, order = torch.sort(keys)
            if sorted_keys.numel() > 1 and bool((sorted_keys[1:] == sorted_keys[:-1]).any()):
                raise ValueError("coords hold duplicate rows; voxelize (unique) before building a SparseTensor")
        self.sorted_keys = sorted_keys
        self.order = order
        # rows already in key order (what voxelizers produce): row index == sorted position
        self.is_sorted = bool(torch.equal(order, torch.arange(order.numel(), device=order.device)))
        self._inverse = None

    @property
    def inverse(self) -> torch.Tensor:
        """[N] int64: sorted position of each row (order's inverse permutation)."""
        if self._inverse is None:
            self._inverse = torch.empty_like(self.order)
            self._inverse[self.order] = torch.arange(len(self), device=self.order.device)
        return self._inverse

    def __len__(self):
        return self.coords.shape[0]

    def lookup(self, query: torch.Tensor):
        """Find query keys [M] in this set -> (hit [M] bool, row [M] int64, valid where hit)."""
        pos = torch.searchsorted(self.sorted_keys, query)
        pos.clamp_(max=len(self) - 1)
        hit = self.sorted_keys[pos] == query
        return hit, self.order[pos]


def downsample(fine: CoordSet, coder: KeyCoder, stride: int):
    """Parents of a stride-`stride` set at stride 2*stride: floor(c / 2s) * 2s per occupied row.

    Returns (coarse CoordSet ordered by key, and per fine voxel in sorted-key order: parent [N_fine]
    int64 row in coarse, child [N_fine] int64 in 0..7 = kx*4 + ky*2 + kz, its place in the 2x2x2 cell).
    """
    s2 = 2 * stride
    c = fine.coords if fine.is_sorted else fine.coords[fine.order]
    c = c.to(torch.int64)
    xyz = c[:, 1:]
    parent_xyz = torch.div(xyz, s2, rounding_mode="floor") * s2
    rel = torch.div(xyz - parent_xyz, stride, rounding_mode="floor")
    child = rel[:, 0] * 4 + rel[:, 1] * 2 + rel[:, 2]
    pkeys = coder.encode(torch.cat([c[:, :1], parent_xyz], 1))
    ukeys, parent = torch.unique(pkeys, sorted=True, return_inverse=True)
    order = torch.arange(ukeys.numel(), device=ukeys.device)
    coarse = CoordSet(coder.decode(ukeys), ukeys, ukeys, order)
    return coarse, parent, child
