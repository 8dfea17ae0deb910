"""Point operations in plain PyTorch (CPU and CUDA) for point backbones (models/point_transformer.py,
models/ptv3.py): k-nearest-neighbour search per scene, space-filling-curve serialization, grid
clustering (pooling / sampling) and inverse-distance interpolation.

Scenes of a batch are given by `offset` int64 [B + 1] (rows of scene b are offset[b]:offset[b+1]),
as in lib.structure.PointBatch; no operation here lets a point see another scene's points.
"""
from .grid import GridClusters, grid_cluster, offset_to_batch, segment_max, segment_mean
from .interpolate import interpolate
from .knn import knn
from .patches import Patches, patch_partition
from .serialize import ORDERS, encode, hilbert_encode, serialize, zorder_encode

__all__ = ["GridClusters", "ORDERS", "encode", "grid_cluster", "hilbert_encode", "interpolate", "knn",
           "offset_to_batch", "Patches", "patch_partition", "segment_max", "segment_mean", "serialize", "zorder_encode"]
