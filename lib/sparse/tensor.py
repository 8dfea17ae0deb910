"""SparseTensor and the SparseContext shared by every tensor derived from one input."""

import torch

from .coords import CoordSet, KeyCoder, downsample
from .kernel_map import KernelMap, down_map, region_map
from .regions import as_region


class SparseContext:
    """Per-input cache: coordinate sets per stride, kernel maps per (stride, KernelRegion),
    down maps per stride, the engine that runs this input, and engine-private state.

    Created with the first SparseTensor of an input; lives for one forward (and backward) pass.
    """

    def __init__(self, coords: torch.Tensor, stride: int = 1, engine: str = "auto"):
        self.coder = KeyCoder(coords)
        self._sets = {stride: CoordSet(coords, self.coder.encode(coords))}
        self._kernel_maps = {}
        self._down = {}
        self.requested_engine = engine
        self._engine = None
        self.engine_state = {}  # adapters keep their own per-input caches here, keyed by engine name

    @property
    def base_stride(self) -> int:
        """Stride of the input this context was made for (the finest coordinates it knows)."""
        return min(self._sets)

    def coord_set(self, stride: int) -> CoordSet:
        """Coordinate set at `stride`; coarser ones are derived from the finest by repeated k2s2 downsampling."""
        if stride not in self._sets:
            base = self.base_stride
            if stride <= base or stride % base or (stride // base) & (stride // base - 1):
                raise KeyError(f"no coordinates at stride {stride} in this context (known: {sorted(self._sets)})")
            self.down_map(stride // 2)
        return self._sets[stride]

    def coords(self, stride: int) -> torch.Tensor:
        return self.coord_set(stride).coords

    def kernel_map(self, stride: int, region=3, dilation: int = 1) -> KernelMap:
        """Submanifold map at `stride` of a KernelRegion, or of the cube (kernel_size, dilation)
        when `region` is an int; cached per (stride, region), so equal regions share one map."""
        key = (stride, as_region(region, dilation))
        if key not in self._kernel_maps:
            self._kernel_maps[key] = region_map(self.coord_set(stride), self.coder, stride, key[1])
        return self._kernel_maps[key]

    def down_map(self, stride: int) -> KernelMap:
        """Map of the k2s2 convolution from stride `stride` to 2*stride (creates the coarse set)."""
        if stride not in self._down:
            fine = self.coord_set(stride)
            coarse, parent, child = downsample(fine, self.coder, stride)
            self._sets[2 * stride] = coarse
            self._down[stride] = down_map(fine, coarse, parent, child)
        return self._down[stride]

    def engine(self, device: torch.device, training: bool):
        """The engine running this input, chosen once at its first layer."""
        if self._engine is None:
            from .engines import get_engine, resolve_engine
            self._engine = get_engine(resolve_engine(self.requested_engine, device, training))
        return self._engine


class SparseTensor:
    """feats [N, C] float, coords [N, 4] int32 (batch, x, y, z) in finest-grid units, stride s.

    At stride s every coordinate is a multiple of s. `ctx` is shared by all tensors derived from
    one input; a new one is made (with `engine`, default 'auto') when none is given.
    """

    def __init__(self, feats: torch.Tensor, coords: torch.Tensor, stride: int = 1, ctx: SparseContext = None,
                 engine: str = "auto"):
        if feats.ndim != 2 or feats.shape[0] != coords.shape[0]:
            raise ValueError(f"feats must be [N, C] with N = coords rows ({coords.shape[0]}), "
                             f"got shape {tuple(feats.shape)}")
        if coords.dtype != torch.int32:
            coords = coords.to(torch.int32)
        if ctx is None:
            if stride > 1 and bool((coords[:, 1:] % stride != 0).any()):
                raise ValueError(f"coords at stride {stride} must be multiples of {stride}")
            ctx = SparseContext(coords, stride, engine)
        self.feats = feats
        self.coords = coords
        self.stride = int(stride)
        self.ctx = ctx

    @property
    def device(self) -> torch.device:
        return self.feats.device

    def __len__(self) -> int:
        return self.feats.shape[0]

    def replace(self, feats: torch.Tensor) -> "SparseTensor":
        """Same coordinates, stride and ctx; new features [N, C']."""
        return SparseTensor(feats, self.coords, self.stride, self.ctx)

    def engine(self, training: bool):
        return self.ctx.engine(self.device, training)

    def __repr__(self) -> str:
        return f"SparseTensor(N={len(self)}, C={self.feats.shape[1]}, stride={self.stride})"
