"""Moving labels between voxels, original points and official ids."""
from collections.abc import Sequence

import numpy as np
import torch

from lib import IGNORE_INDEX


def voxel_to_points(voxel_values: torch.Tensor, inverse: torch.Tensor) -> torch.Tensor:
    """Per-point predictions of one scene from its voxels.

    Args:
        voxel_values: [M, K] logits or scores per voxel (argmax taken), or int [M] class per voxel.
        inverse: int64 [P], original point -> voxel row.
    Returns:
        int64 [P] predicted class per original point, on the device of `voxel_values`.
    """
    pred = voxel_values.argmax(dim=1) if voxel_values.dim() == 2 else voxel_values.long()
    inverse = inverse.to(pred.device, torch.int64)
    if inverse.numel() and (int(inverse.min()) < 0 or int(inverse.max()) >= pred.shape[0]):
        raise ValueError(f"voxel_to_points: inverse holds rows outside [0, {pred.shape[0]})")
    return pred[inverse]


def split_batch_points(voxel_values: torch.Tensor, offsets: torch.Tensor,
                       inverses: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Per-point predictions of every scene of a collated batch.

    Args:
        voxel_values: [N, K] logits (or int [N] classes) for all voxels of the batch, in the order of
            the batch's `coords`.
        offsets: int64 [B + 1], voxel row range of each scene in the batch.
        inverses: B tensors int64 [P_b], point -> voxel row within its own scene.
    Returns:
        B tensors int64 [P_b].
    """
    if len(offsets) != len(inverses) + 1:
        raise ValueError(f"split_batch_points: {len(offsets)} offsets for {len(inverses)} scenes (need B + 1)")
    bounds = [int(o) for o in offsets]
    return [voxel_to_points(voxel_values[bounds[b]:bounds[b + 1]], inv) for b, inv in enumerate(inverses)]


def raw_to_class(raw: np.ndarray | torch.Tensor, raw_ids: Sequence[int]) -> torch.Tensor:
    """Official ids -> class indices (position in `raw_ids`); an id not in `raw_ids` -> IGNORE_INDEX.

    For ids that map one-to-one onto classes (ScanNet NYU40). SemanticKITTI raw labels need
    `label & 0xFFFF` and the official learning_map first (moving classes share a class).

    Used to score official files: the ScanNet rule (non-valid GT skipped, non-valid prediction a
    miss) follows because the confusion matrix skips IGNORE_INDEX ground truth and counts an
    IGNORE_INDEX prediction as a miss.

    Args:
        raw: int [P] official ids (ScanNet NYU40 ids, say).
        raw_ids: K official ids, class c -> raw_ids[c] (DatasetMeta.raw_ids).
    Returns:
        int64 [P] class indices.
    """
    raw = torch.as_tensor(np.asarray(raw) if not torch.is_tensor(raw) else raw).long()
    ids = torch.as_tensor(list(raw_ids), dtype=torch.int64, device=raw.device)
    lut_size = max(int(ids.max()), int(raw.max()) if raw.numel() else 0) + 1
    lut = torch.full((lut_size,), IGNORE_INDEX, dtype=torch.int64, device=raw.device)
    lut[ids] = torch.arange(len(ids), device=raw.device)
    out = torch.full_like(raw, IGNORE_INDEX)
    inside = raw >= 0
    out[inside] = lut[raw[inside]]
    return out
