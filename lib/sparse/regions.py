"""Kernel regions: the set of neighbour offsets a submanifold layer reads, in a fixed order.

A KernelRegion holds offsets [K][3] (dx, dy, dz) in units of the tensor stride, dilation already
multiplied in: a region read at stride s reaches c + o * s. The order of `offsets` IS the weight
layout: row k of a weight [K, Cin, Cout] (depthwise [K, C]) and column k of a neighbour table
belong to offsets[k].

Canonical order: the built-in constructors (cube, cross, plane) list their offsets in
lexicographic (x, y, z) order, x slowest and z fastest: for the cube this is the order of
kernel_map.kernel_offsets, and cross/plane are the cube's order with the other offsets left out.
`custom` keeps the order it is given; `masked` keeps the order of the region it masks.

Regions are immutable and hashable on their offsets (the name takes no part), so a region is
part of the SparseContext's kernel-map cache key and equal offset lists share one map.
"""

import functools
import itertools
import math
import re

import torch

_PLANES = {"xy": 2, "xz": 1, "yz": 0}  # plane -> the axis held at 0
_NAME = re.compile(r"(cube|cross|plane_(?:xy|xz|yz))(\d+)(?:d(\d+))?")


def _cube_offsets(kernel_size: int, dilation: int):
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"a region needs an odd kernel_size, got {kernel_size}")
    if dilation < 1:
        raise ValueError(f"a region needs dilation >= 1, got {dilation}")
    r = kernel_size // 2
    rng = [i * dilation for i in range(-r, r + 1)]
    return list(itertools.product(rng, rng, rng))


class KernelRegion:
    """An ordered, duplicate-free list of K 3D offsets (stride units) plus a readable name."""

    __slots__ = ("_offsets", "_name", "_hash")

    def __init__(self, offsets, name: str = None):
        """Prefer the constructors; `offsets` is any sequence of K integer triples."""
        try:
            offs = tuple((int(a), int(b), int(c)) for a, b, c in (tuple(o) for o in offsets))
        except (TypeError, ValueError) as err:
            raise ValueError(f"region offsets must be a list of integer (dx, dy, dz) triples ({err})")
        if not offs:
            raise ValueError("a region needs at least one offset")
        if len(set(offs)) != len(offs):
            dup = next(o for i, o in enumerate(offs) if o in offs[:i])
            raise ValueError(f"region offsets hold a duplicate: {dup}")
        object.__setattr__(self, "_offsets", offs)
        object.__setattr__(self, "_name", name or f"custom{len(offs)}")
        object.__setattr__(self, "_hash", hash(offs))

    def __setattr__(self, key, value):
        raise AttributeError("KernelRegion is immutable")

    # constructors -------------------------------------------------------------------------------
    @classmethod
    def cube(cls, kernel_size: int = 3, dilation: int = 1) -> "KernelRegion":
        """All k^3 offsets i * dilation, i in -r..r per axis; x slowest, z fastest."""
        return cls(_cube_offsets(kernel_size, dilation), f"cube{kernel_size}" + (f"d{dilation}" if dilation > 1 else ""))

    @classmethod
    def cross(cls, kernel_size: int = 3, dilation: int = 1) -> "KernelRegion":
        """The centre plus the three axes of the cube: 3 * (k - 1) + 1 offsets, cube order."""
        offs = [o for o in _cube_offsets(kernel_size, dilation) if sum(v != 0 for v in o) <= 1]
        return cls(offs, f"cross{kernel_size}" + (f"d{dilation}" if dilation > 1 else ""))

    @classmethod
    def plane(cls, axes: str = "xy", kernel_size: int = 3, dilation: int = 1) -> "KernelRegion":
        """The k^2 offsets of the cube lying in the plane `axes` ('xy', 'xz' or 'yz'), cube order."""
        if axes not in _PLANES:
            raise ValueError(f"plane axes must be one of {', '.join(_PLANES)}, got {axes!r}")
        zero = _PLANES[axes]
        offs = [o for o in _cube_offsets(kernel_size, dilation) if o[zero] == 0]
        return cls(offs, f"plane_{axes}{kernel_size}" + (f"d{dilation}" if dilation > 1 else ""))

    @classmethod
    def from_name(cls, name: str) -> "KernelRegion":
        """The built-in region a `name` stands for (configs): cube<k>, cross<k>, plane_<xy|xz|yz><k>,
        each optionally followed by d<dilation>, e.g. "cube3d2", "cross5", "plane_xz3"."""
        match = _NAME.fullmatch(str(name))
        if match is None:
            raise ValueError(f"unknown region name {name!r}: expected cube<k>, cross<k> or plane_<xy|xz|yz><k>, "
                             "optionally followed by d<dilation> (e.g. cube3d2)")
        kind, k, d = match.group(1), int(match.group(2)), int(match.group(3) or 1)
        if kind.startswith("plane_"):
            return cls.plane(kind[len("plane_"):], k, d)
        return getattr(cls, kind)(k, d)

    @classmethod
    def custom(cls, offsets, name: str = None) -> "KernelRegion":
        """Any explicit offset list (stride units), kept in the given order; duplicates are rejected."""
        return cls(offsets, name)

    @classmethod
    def masked(cls, region: "KernelRegion", mask, name: str = None) -> "KernelRegion":
        """The offsets of `region` where `mask` (K booleans, in region order) is true, order kept."""
        keep = [bool(m) for m in (mask.tolist() if isinstance(mask, torch.Tensor) else mask)]
        if len(keep) != len(region):
            raise ValueError(f"mask has {len(keep)} entries, region {region.name} has {len(region)} offsets")
        offs = [o for o, m in zip(region.offsets, keep) if m]
        if not offs:
            raise ValueError(f"mask keeps no offset of region {region.name}")
        return cls(offs, name or f"{region.name}_masked{len(offs)}")

    # accessors ----------------------------------------------------------------------------------
    @property
    def offsets(self) -> tuple:
        """((dx, dy, dz), ...) K int triples in stride units, in weight-layout order."""
        return self._offsets

    @property
    def name(self) -> str:
        return self._name

    def __len__(self) -> int:
        return len(self._offsets)

    @property
    def center(self):
        """Index of the (0, 0, 0) offset, or None when the region leaves the voxel itself out."""
        try:
            return self._offsets.index((0, 0, 0))
        except ValueError:
            return None

    @property
    def reach(self) -> int:
        """Largest |component| of any offset (stride units)."""
        return max(abs(v) for o in self._offsets for v in o)

    def offsets_tensor(self, device=None) -> torch.Tensor:
        """int64 [K, 3] on `device`."""
        return torch.tensor(self._offsets, dtype=torch.int64, device=device)

    def mask(self, kernel_size: int = None, dilation: int = None) -> torch.Tensor:
        """bool [k, k, k] (x, y, z) grid with the region's offsets set; by default the smallest
        dilation-`d` cube holding the region, d the gcd of all components. Index i of an axis
        stands for offset (i - k // 2) * d."""
        d = dilation or _gcd_all(self._offsets)
        if any(v % d for o in self._offsets for v in o):
            raise ValueError(f"region {self.name} does not lie on a dilation-{d} grid")
        r = self.reach // d
        k = kernel_size or 2 * r + 1
        if k // 2 < r:
            raise ValueError(f"region {self.name} reaches {r} steps, beyond kernel_size {k}")
        grid = torch.zeros(k, k, k, dtype=torch.bool)
        for o in self._offsets:
            grid[tuple(v // d + k // 2 for v in o)] = True
        return grid

    def as_cube(self):
        """(kernel_size, dilation) if this region is exactly a cube in canonical order, else None:
        such regions run on every engine's own convolution."""
        k = round(len(self) ** (1 / 3))
        if k ** 3 != len(self) or k % 2 == 0:
            return None
        d = self.reach // (k // 2) if k > 1 else 1
        if d < 1 or self._offsets != tuple(_cube_offsets(k, d)):
            return None
        return k, d

    def __eq__(self, other) -> bool:
        return isinstance(other, KernelRegion) and self._offsets == other._offsets

    def __hash__(self) -> int:
        return self._hash

    def __repr__(self) -> str:
        return f"KernelRegion({self.name}, K={len(self)})"

    def __reduce__(self):  # pickling (DataLoader workers, deepcopy of layers)
        return (KernelRegion, (self._offsets, self._name))


def _gcd_all(offsets) -> int:
    g = 0
    for o in offsets:
        for v in o:
            g = math.gcd(g, abs(v))
    return g or 1


def as_region(region=3, dilation: int = 1) -> KernelRegion:
    """A KernelRegion, or an odd int kernel size (with `dilation`) meaning the cube region."""
    if isinstance(region, KernelRegion):
        if dilation != 1:
            raise ValueError(f"dilation={dilation} given with region {region.name}: "
                             "put the dilation into the region's offsets")
        return region
    if isinstance(region, int) and not isinstance(region, bool):
        return _cube(region, dilation)
    raise TypeError(f"expected a KernelRegion or an odd int kernel size, got {type(region).__name__}")


@functools.lru_cache(maxsize=None)
def _cube(kernel_size: int, dilation: int) -> KernelRegion:
    # engines look maps up by (kernel_size, dilation) in every layer: build each cube once
    return KernelRegion.cube(kernel_size, dilation)
