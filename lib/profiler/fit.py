"""How many voxels fit: forward+backward peak measured at several voxel counts, fitted as
bytes = base_bytes + bytes_per_voxel x N.

The counts come from crops of a real batch (slabs of each scene along its longer horizontal axis), so
the voxels keep their real neighbourhoods and the kernel maps their real sizes; a random subsample
would thin the neighbourhoods and under-state the per-voxel cost. Each point is one training pass
(lib.profiler.meter: CUDA allocator counters, or the CPU allocator's events replayed), measured from
a fresh input, plus the parameters, buffers and the optimizer's state (which live all along).
Limits: the fit is linear; caching-allocator fragmentation and the CUDA context (some hundred MiB)
are not in it, so leave ~10 % of the card out of the budget.
"""
from dataclasses import dataclass

import numpy as np
import torch

from lib.profiler.meter import MemoryTimeline
from lib.profiler.report import static_bytes

FRACTIONS = (0.25, 0.5, 0.75, 1.0)


# Measured on demo.yaml (CPU, budget 250 MB): a batch at the unhedged limit peaked 0.7% over the
# budget (the fit's error there was 1.5%), so the limit keeps 5% of the budget free.
HEADROOM = 0.05


@dataclass
class PointsModel:
    base_bytes: float
    bytes_per_voxel: float

    def predict(self, voxels: int) -> float:
        return self.base_bytes + self.bytes_per_voxel * voxels

    def largest_fitting(self, budget_bytes: int, headroom: float = HEADROOM) -> int:
        """The most voxels per batch whose predicted peak stays within `budget_bytes` less a `headroom`
        fraction (the fit is linear; augmentation and scene shape move a real batch's peak a few %)."""
        room = budget_bytes * (1.0 - headroom) - self.base_bytes
        if room <= 0 or self.bytes_per_voxel <= 0:
            raise ValueError(f"memory budget {budget_bytes} bytes does not even hold the model's base "
                             f"{int(self.base_bytes)} bytes")
        return int(room // self.bytes_per_voxel)

    def as_dict(self) -> dict:
        return {"base_bytes": int(round(self.base_bytes)), "bytes_per_voxel": float(self.bytes_per_voxel)}


def fit(samples) -> PointsModel:
    """Least-squares line through [(voxels, bytes)] (at least two distinct voxel counts)."""
    n = np.array([s[0] for s in samples], dtype=np.float64)
    y = np.array([s[1] for s in samples], dtype=np.float64)
    if len(set(n.tolist())) < 2:
        raise ValueError("the points model needs peaks at two or more voxel counts")
    slope, intercept = np.polyfit(n, y, 1)
    return PointsModel(float(intercept), float(slope))


def optimizer_state_bytes(optimizer_cfg, parameter_bytes: int) -> int:
    """State the configured optimizer keeps per parameter: SGD momentum 1x, Adam/AdamW 2x."""
    name = getattr(optimizer_cfg, "name", "sgd")
    if name in ("adam", "adamw"):
        return 2 * parameter_bytes
    return parameter_bytes if getattr(optimizer_cfg, "momentum", 0.0) > 0 else 0


def crop_batch(batch: dict, fraction: float) -> dict:
    """A collated batch (datasets/collate.py keys) cut to about `fraction` of each scene's voxels: the
    slab with the smallest coordinates along the scene's longer horizontal axis. Per-point lists
    (inverse, points, point_labels) keep the points of kept voxels; other keys are copied as they are."""
    if fraction >= 1.0:
        return batch
    coords, offsets = batch["coords"], batch["offsets"].tolist()
    keep = torch.zeros(len(coords), dtype=torch.bool)
    new_offsets, out = [0], dict(batch)
    per_point = {k: [] for k in ("inverse", "points", "point_labels") if k in batch}
    for b in range(len(offsets) - 1):
        lo, hi = offsets[b], offsets[b + 1]
        xy = coords[lo:hi, 1:3]
        axis = int(torch.argmax(xy.max(0).values - xy.min(0).values))
        order = torch.argsort(xy[:, axis].long() * (hi - lo) + torch.arange(hi - lo), stable=True)
        mine = torch.zeros(hi - lo, dtype=torch.bool)
        mine[order[:max(1, int(round(fraction * (hi - lo))))]] = True
        keep[lo:hi] = mine
        new_offsets.append(new_offsets[-1] + int(mine.sum()))
        if "inverse" in batch:
            remap = torch.cumsum(mine.long(), 0) - 1
            kept_points = mine[batch["inverse"][b]]
            per_point["inverse"].append(remap[batch["inverse"][b][kept_points]])
            for key in ("points", "point_labels"):
                if key in per_point:
                    per_point[key].append(batch[key][b][kept_points])
    for key in ("coords", "feats", "labels"):
        if key in batch:
            out[key] = batch[key][keep]
    out["offsets"] = torch.tensor(new_offsets, dtype=batch["offsets"].dtype)
    out.update(per_point)
    return out


def train_pass(model, x) -> None:
    """Forward, a stand-in loss (the logits' sum plus the model's own losses: the same backward graph
    as a real loss up to the loss head), backward."""
    from lib.model_contract import parse_output

    out = model(x)
    out = parse_output(getattr(out, "feats", out))  # a bare stack of layers returns a SparseTensor
    loss = out.logits.float().sum() + sum(v.float().sum() for v in out.losses.values())
    loss.backward()


def measure_pass(model, batch, make_input, device) -> int:
    """Peak bytes of one training pass above its start (the input is built inside, as in training)."""
    model.train()
    with MemoryTimeline(device) as tl:
        train_pass(model, make_input(batch, device))
    model.zero_grad(set_to_none=True)
    return tl.span_peak(0, len(tl.labels) - 1)


def measure_forward(model, batch, make_input, device) -> int:
    """Peak bytes of one inference forward (eval mode, no autograd) above its start: what
    `--mode predict` runs per tile."""
    model.eval()
    with torch.no_grad(), MemoryTimeline(device) as tl:
        model(make_input(batch, device))
    return tl.span_peak(0, len(tl.labels) - 1)


def measure_points_model(model, batch, make_input, device, fractions=FRACTIONS, resident_bytes=None,
                         measure=measure_pass):
    """Fit the points model on crops of `batch`. `resident_bytes` (default: parameters and buffers)
    is added to every measured pass; `measure`: a training pass (default) or `measure_forward`.
    Returns (PointsModel, [(voxels, bytes)])."""
    resident = static_bytes(model) if resident_bytes is None else resident_bytes
    was_training = model.training
    samples = []
    try:
        for fraction in sorted(fractions):
            part = crop_batch(batch, fraction)
            samples.append((len(part["coords"]), resident + measure(model, part, make_input, device)))
    finally:
        model.train(was_training)
    return fit(samples), samples
