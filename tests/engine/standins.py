"""Tiny stand-ins for the dataset, collate and model contracts (docs/ARCHITECTURE.md), so the
engine is tested without the real data pipeline. Module-level so spawned processes can import them."""
import numpy as np
import torch
from torch import nn

from lib import IGNORE_INDEX


class Meta:
    """The DatasetMeta fields the engine, evaluator and exporter read."""
    name = "standin"
    class_names = ["a", "b", "c"]
    num_classes = 3
    in_channels = 4
    palette = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255]], dtype=np.uint8)
    raw_ids = np.array([1, 2, 3])
    benchmark = None
    convention = "standard"
    scene_info = {}


class ToyScenes(torch.utils.data.Dataset):
    """`n` scenes of `voxels` voxels each; features are a noisy one-hot of the label plus a 1.

    Each original point maps to a voxel (2 points per voxel). A global-RNG jitter on the
    features stands in for augmentation, so data seeding matters for reproducibility.
    """

    meta = Meta()

    def __init__(self, n: int = 6, voxels: int = 40, seed: int = 0, noise: float = 0.8, jitter: float = 0.1):
        g = np.random.default_rng(seed)
        self.scenes = []
        for i in range(n):
            coords = np.stack([np.arange(voxels), np.zeros(voxels), np.full(voxels, i)], 1).astype(np.int32)
            labels = g.integers(0, 3, voxels)
            labels[0] = IGNORE_INDEX
            feats = np.eye(3, dtype=np.float32)[np.clip(labels, 0, 2)] + noise * g.standard_normal((voxels, 3))
            feats = np.concatenate([feats, np.ones((voxels, 1))], 1).astype(np.float32)
            inverse = np.repeat(np.arange(voxels), 2)
            self.scenes.append((coords, feats, labels, inverse))
        self.jitter = jitter

    def __len__(self):
        return len(self.scenes)

    def __getitem__(self, index):
        coords, feats, labels, inverse = self.scenes[index]
        feats = feats + self.jitter * np.random.standard_normal(feats.shape).astype(np.float32)
        return self._item(index, coords, feats, labels, inverse)

    def get_view(self, index, rotation_z=0.0, flip_x=False, scale=1.0):
        coords, feats, labels, inverse = self.scenes[index]
        # A reversed voxel order stands in for a re-voxelised view: same points, other rows.
        order = np.arange(len(coords))[::-1] if flip_x else np.arange(len(coords))
        back = np.argsort(order)
        return self._item(index, coords[order], feats[order] * scale, labels[order], back[inverse])

    def _item(self, index, coords, feats, labels, inverse):
        # numpy arrays, as the real datasets return them (collate makes tensors)
        points = np.repeat(coords.astype(np.float32), 2, axis=0)[: len(inverse)]
        _, _, scene_labels, scene_inverse = self.scenes[index]
        return {"coords": coords, "feats": np.asarray(feats, dtype=np.float32), "labels": labels.astype(np.int64),
                "inverse": inverse.astype(np.int64), "point_labels": scene_labels[scene_inverse].astype(np.int64),
                "points": points, "scene": f"scene{index:02d}",
                "sampled_points": coords.astype(np.float32) + 0.5}


class GrowingScenes(ToyScenes):
    """ToyScenes whose items have `voxel_counts()` voxels times a random growth in [1, 1.8)
    (capped at `voxels`), drawn from the seeded global RNG: augmentation that grows scenes past
    the voxel cap the sampler packed them under."""

    def __init__(self, n: int = 12, voxels: int = 40, seed: int = 0):
        super().__init__(n=n, voxels=voxels, seed=seed)
        self.counts = np.random.default_rng(seed + 1).integers(10, voxels, n)

    def voxel_counts(self):
        return self.counts

    def __getitem__(self, index):
        item = super().__getitem__(index)
        m = min(int(self.counts[index] * np.random.uniform(1.0, 1.8)), len(item["coords"]))
        for key in ("coords", "feats", "labels", "sampled_points"):
            item[key] = item[key][:m]
        item["inverse"] = np.minimum(item["inverse"], m - 1)
        return item


def collate(items):
    """The collate contract: batch column first, offsets [B + 1], per-scene lists of tensors."""
    t = torch.as_tensor
    coords = [torch.cat([torch.full((len(it["coords"]), 1), b, dtype=torch.int32),
                         t(it["coords"]).int()], 1) for b, it in enumerate(items)]
    sizes = torch.tensor([0] + [len(it["coords"]) for it in items])
    return {"coords": torch.cat(coords), "feats": torch.cat([t(it["feats"]) for it in items]),
            "point_coords": torch.cat([t(it["sampled_points"]) for it in items]),
            "labels": torch.cat([t(it["labels"]) for it in items]), "offsets": sizes.cumsum(0),
            **{k: [t(it[k]) for it in items] for k in ("inverse", "point_labels", "points")},
            "scene": [it["scene"] for it in items]}


class ToyNet(nn.Module):
    """Per-voxel MLP on x.feats (a SparseTensor or a plain tensor); optional named losses
    (l2, l1) and a logged value (mean_logit), dropout, BatchNorm (bn, bn_momentum), and NaN logits on the training forwards
    numbered in `nan_at` (1-based), a finite loss with infinite gradients on those in `nan_grad_at`."""

    def __init__(self, in_channels, num_classes, hidden=16, aux=False, dropout=0.0, bn=False, nan_at=(),
                 nan_grad_at=(), bn_momentum=0.1):
        super().__init__()
        layers = [nn.Linear(in_channels, hidden)]
        if bn:
            layers.append(nn.BatchNorm1d(hidden, momentum=bn_momentum))
        layers += [nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, num_classes)]
        self.net = nn.Sequential(*layers)
        self.aux = aux
        self.nan_at = set(nan_at)
        self.nan_grad_at = set(nan_grad_at)
        self.train_forwards = 0

    def forward(self, x):
        feats = getattr(x, "feats", x)
        logits = self.net(feats)
        if self.training:
            self.train_forwards += 1
            if self.train_forwards in self.nan_at:
                logits = logits * float("nan")
            if self.train_forwards in self.nan_grad_at:  # adds 0 to the loss, inf to the gradient
                weight = self.net[0].weight
                logits = logits + torch.sqrt((weight - weight.detach()).sum())
        if self.aux:
            return {"logits": logits, "losses": {"l2": 1e-3 * (logits ** 2).mean(), "l1": 1e-2 * logits.abs().mean()},
                    "logs": {"mean_logit": logits.detach().mean()}}
        return logits


def build_dataset(data_cfg, split):
    return ToyScenes(n=6 if split == "train" else 4, seed=0 if split == "train" else 1)


def build_model(model_cfg, in_channels, num_classes):
    return ToyNet(in_channels, num_classes, **model_cfg.args)


def plain_input(batch, device):
    return batch["feats"].to(device)


def bn_rank_worker(rank: int, world: int, init_file: str, out_dir: str):
    """One gloo rank of tests/engine/test_distributed.py: a DDP step of a BatchNorm ToyNet on this
    rank's own data, an EMA update, then `average_buffers`; saves the buffers before and after."""
    import torch.distributed as dist

    from lib.engine.dist import average_buffers
    from lib.engine.ema import ModelEMA

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    torch.manual_seed(0)
    net = ToyNet(4, 3, bn=True)
    ema = ModelEMA(net, decay=0.5)
    ddp = nn.parallel.DistributedDataParallel(net)
    torch.manual_seed(10 + rank)
    feats = torch.randn(20, 4) * (rank + 1)  # each rank's batch has its own statistics
    ddp(feats).sum().backward()
    ema.update(net)

    def buffers():
        return {f"{tag}.{name}": b.clone() for tag, m in (("model", net), ("ema", ema.module))
                for name, b in m.named_buffers()}

    before = buffers()
    average_buffers(net, ema.module)
    torch.save({"before": before, "after": buffers()}, f"{out_dir}/rank{rank}.pt")
    dist.destroy_process_group()


def capped_rank_worker(rank: int, world: int, init_file: str, out_dir: str):
    """One gloo rank of tests/engine/test_voxel_budget.py: this rank's `CappedStream` over
    GrowingScenes for 24 steps; saves [(epoch, scenes, carried, in the epoch's tail)] per step."""
    import torch.distributed as dist

    from lib.engine.data import make_loader
    from lib.engine.voxel_budget import CappedStream, VoxelBudgetBatchSampler

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    ds = GrowingScenes(n=16)
    sampler = VoxelBudgetBatchSampler(ds.voxel_counts(), 50, 3, rank, world, seed=1)
    stream = CappedStream(make_loader(ds, 3, 0, list, rank, world, seed=1, batch_sampler=sampler), 50, collate)
    steps = []
    for _ in range(24):
        batch = next(stream)
        steps.append((stream.epoch, batch["scene"], batch["carried"], stream.tail is not None))
    torch.save(steps, f"{out_dir}/rank{rank}.pt")
    dist.destroy_process_group()


def auto_limit_rank_worker(rank: int, world: int, port: int, out_dir: str):
    """One gloo rank of tests/engine/test_auto_limit.py: the train mode with
    `data.limit_numpoints: auto` where each rank's own measurement would give another limit
    (50 + 30 x rank voxels); saves which ranks measured and the limit this rank's stream keeps."""
    import os

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE=str(world))
    from lib.engine import auto_limit
    from lib.engine.launch import run
    from lib.engine.modes import train as train_mode
    from tests.engine import standin_main

    measured, kept = [], []

    def measure(cfg, dataset, build_model, collate_fn, make_input, device):
        measured.append(rank)
        return 50 + 30 * rank, f"stand-in measurement on rank {rank}"

    real_loaders = train_mode.make_train_loaders

    def recording_loaders(run_ctx, train_set, val_set):
        stream, val_loader = real_loaders(run_ctx, train_set, val_set)
        kept.append((run_ctx.cfg.data.limit_numpoints, stream.limit))
        return stream, val_loader

    auto_limit.measure_limit = measure
    train_mode.make_train_loaders = recording_loaders
    cfg = standin_main.config(["data.limit_numpoints=auto", "data.memory_budget=1MB", "train.iterations=4"])
    summary = run(cfg, "train", f"{out_dir}/run", build_dataset, build_model, collate, make_input=plain_input)
    torch.save({"measured": measured, "kept": kept, "iterations": summary["iterations"]}, f"{out_dir}/rank{rank}.pt")
