"""Sparse-convolution core: SparseTensor, its shared SparseContext, layers (lib.sparse.nn), engines,
kernel regions (lib.sparse.regions) and chunked neighbourhood primitives (lib.sparse.neighborhood).

See docs/ARCHITECTURE.md ("Sparse core") for the contract.
"""

from .engines import ENGINES, resolve_engine
from .neighborhood import masked_softmax, neighborhood_aggregate, pair_scores
from .regions import KernelRegion
from .tensor import SparseContext, SparseTensor

__all__ = ["ENGINES", "KernelRegion", "SparseContext", "SparseTensor", "masked_softmax",
           "neighborhood_aggregate", "pair_scores", "resolve_engine"]
