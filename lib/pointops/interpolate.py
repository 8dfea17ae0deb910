"""Inverse-distance interpolation from a coarse point set onto a finer one (feature propagation)."""
import torch

from .knn import knn


def interpolate(src_coord: torch.Tensor, src_offset: torch.Tensor, src_feat: torch.Tensor,
                dst_coord: torch.Tensor, dst_offset: torch.Tensor, k: int = 3, eps: float = 1e-8) -> torch.Tensor:
    """[M, C]: for every destination point, sum_j w_j f_j over its k nearest source points in the
    same scene, w_j = (1 / (d_j + eps)) / sum_l (1 / (d_l + eps)).

    src_coord [N, 3] metres, src_feat [N, C], offsets int64 [B + 1]; dst_coord [M, 3].
    """
    idx, dist = knn(src_coord, src_offset, k, dst_coord, dst_offset)
    weight = 1.0 / (dist + eps)
    weight = weight / weight.sum(1, keepdim=True)
    return (src_feat[idx] * weight[..., None].to(src_feat.dtype)).sum(1)
