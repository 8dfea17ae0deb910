"""Memorising one real ScanNet scan: the shared loop of the point-backbone overfit tests."""
import torch

from lib import IGNORE_INDEX
from lib.structure import PointBatch
from tests.pointops.scans import scan_batch


def miou(pred: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean IoU over the classes present in labels (IGNORE_INDEX rows skipped)."""
    valid = labels != IGNORE_INDEX
    pred, labels = pred[valid], labels[valid]
    ious = [((pred == c) & (labels == c)).sum() / ((pred == c) | (labels == c)).sum() for c in labels.unique()]
    return float(torch.stack(ious).mean())


def overfit(model_fn, scene: str, voxel_size: float, steps: int, lr: float):
    """Train model_fn(in_channels=6, num_classes=20) on one scan (colour + centred xyz features);
    returns the mIoU of the voxel labels on the last training pass and the loss curve."""
    batch, labels = scan_batch([scene], voxel_size)
    feat = torch.cat([batch.feat, batch.coord - batch.coord.mean(0)], 1)
    batch = PointBatch(batch.coord, batch.grid_coord, feat, batch.offset, voxel_size)
    torch.manual_seed(0)
    model = model_fn(in_channels=6, num_classes=20)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        logits = model(batch)
        loss = torch.nn.functional.cross_entropy(logits, labels, ignore_index=IGNORE_INDEX)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return miou(logits.argmax(1), labels), losses
