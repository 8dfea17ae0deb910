"""Sparse-convolution core: SparseTensor, its shared SparseContext, layers (lib.sparse.nn), engines.

See docs/ARCHITECTURE.md ("Sparse core") for the contract.
"""

from .engines import ENGINES, resolve_engine
from .tensor import SparseContext, SparseTensor

__all__ = ["ENGINES", "SparseContext", "SparseTensor", "resolve_engine"]
