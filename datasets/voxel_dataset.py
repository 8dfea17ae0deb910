"""The dataset every dataset module builds on: load a scene, augment, voxelize, keep the maps.

Random streams: item `index` of epoch `epoch` on rank `rank` draws from a generator seeded by
SeedSequence([seed, epoch, rank, index]), so streams differ across items, epochs and ranks, and do
not depend on which DataLoader worker happens to load the item (reproducible for any num_workers).
"""
import json
from pathlib import Path
from typing import Optional

import numpy as np
import torch.utils.data

from datasets.errors import DataFormatError
from datasets.heap import retain_freed_memory
from datasets.meta import DatasetMeta
from datasets.transforms import (apply_affine, augment_colors, column_min_max, dropout_mask, elastic_distort,
                                 random_affine, rotation_matrix)
from datasets.voxelize import VoxelGridError, voxel_majority, voxel_mean, voxelize
from lib import IGNORE_INDEX
from lib.io import atomic_write_json
from lib.config.schema_data import DataConfig

# channels contributed by each feature name
FEATURE_CHANNELS = {"rgb": 3, "xyz": 3, "remission": 1, "normal": 3, "ones": 1}
# how each is computed (per voxel: the mean of its points, or the drawn point's in random quantization);
# saved in checkpoints so a model is applied to new scans with the inputs it was trained on
FEATURE_SCALING = {"rgb": "colour uint8 / 255 - 0.5", "xyz": "metres, relative to the scene's bounding-box centre",
                   "remission": "as stored (0..1 in SemanticKITTI)", "normal": "unit normal, turned with the points",
                   "ones": "a constant 1"}


class VoxelDataset(torch.utils.data.Dataset):
    """Scenes `scene_ids` of a preprocessed dataset at `root`; subclasses implement `load_scene`.

    Item (see docs/ARCHITECTURE.md, "Batch"): coords int32 [M, 3], feats float32 [M, Cin], labels int64 [M],
    inverse int64 [P], point_labels int64 [P], points float32 [P, 3] metres, scene str, and
    sampled_points float32 [M, 3]: each voxel's point in the augmented frame (metres, the frame the
    `xyz` feature uses): the point drawn to represent it in random quantization, the mean of its
    points in mean quantization (get_view too).
    Mixed voxels (points with different labels): in random quantization the voxel takes the label of
    the point drawn to represent it; in mean quantization the majority valid label (ties: smallest id).
    Point dropout (training only) removes points before voxelization; P then counts the kept points.
    """

    def __init__(self, root: Path, manifest: dict, scene_ids: list[str], meta: DatasetMeta, cfg: DataConfig,
                 features: list[str], augment: bool, seed: int = 0, rank: int = 0):
        self.root = Path(root)
        self.manifest = manifest
        self.scene_ids = list(scene_ids)
        self.meta = meta
        self.cfg = cfg
        self.features = list(features)
        self.augment = augment and cfg.augment.enabled
        self.seed, self.rank, self.epoch = int(seed), int(rank), 0
        mode = cfg.quantization
        self.quantization = ("random" if self.augment else "mean") if mode == "auto" else mode

    def input_features(self) -> dict:
        """{"features": names in channel order, "scaling": name -> how it is computed}: what a
        checkpoint records so `--mode predict` builds the same inputs from a new scan."""
        return {"features": list(self.features), "scaling": {n: FEATURE_SCALING[n] for n in self.features},
                "quantization": "mean"}

    def load_scene(self, scene_id: str) -> dict:
        """coord float32 [P, 3] metres, label int64 [P], and color uint8 [P, 3] / remission float32 [P]
        where the dataset has them."""
        raise NotImplementedError

    def __len__(self) -> int:
        return len(self.scene_ids)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def item_rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng(np.random.SeedSequence([self.seed, self.epoch, self.rank, int(index)]))

    def __getitem__(self, index: int) -> dict:
        scene_id = self.scene_ids[index]
        scene = self.load_scene(scene_id)
        if not self.augment:
            identity = (np.eye(3), np.zeros(3))
            rng = self.item_rng(index) if self.quantization == "random" else None
            return self._make_item(scene_id, scene, identity, rng, augment=False)
        rng = self.item_rng(index)
        keep = dropout_mask(len(scene["coord"]), self.cfg.augment, rng)
        if keep is not None:
            scene = {k: np.asarray(v)[keep] for k, v in scene.items()}
        return self._make_item(scene_id, scene, random_affine(self.cfg.augment, rng), rng, augment=True)

    def get_view(self, index: int, rotation_z: float = 0.0, flip_x: bool = False, scale: float = 1.0) -> dict:
        """Item `index` under a fixed transform (rotation about z in radians, mirror of x, scale),
        mean quantization, no random augmentation; for test-time augmentation."""
        matrix = rotation_matrix(0.0, 0.0, rotation_z) * scale
        if flip_x:
            matrix[0] *= -1.0
        scene_id = self.scene_ids[index]
        return self._make_item(scene_id, self.load_scene(scene_id), (matrix, np.zeros(3)), None, augment=False,
                               quantization="mean")

    def _make_item(self, scene_id, scene, affine, rng, augment: bool, quantization: Optional[str] = None) -> dict:
        retain_freed_memory()  # once per process (also in each DataLoader worker)
        quantization = quantization or self.quantization
        points = np.array(scene["coord"], dtype=np.float32)  # a copy: the stored arrays are read-only maps
        labels = np.asarray(scene["label"], dtype=np.int64)
        matrix, translation = affine
        if "normal" in self.features:  # rotation, mirror and isotropic scale: the normal turns by the matrix
            turned = np.asarray(scene["normal"], dtype=np.float32) @ matrix.T.astype(np.float32)
            scene = dict(scene, normal=turned / np.maximum(np.linalg.norm(turned, axis=1, keepdims=True), 1e-12))
        lo, hi = column_min_max(points)
        centre = (lo + hi) / 2.0
        xyz = apply_affine(points, matrix, translation - matrix @ centre)  # rotate about the centre
        if augment:
            aug = self.cfg.augment
            for granularity, magnitude in zip(aug.elastic_granularity, aug.elastic_magnitude):
                if rng.random() < aug.elastic_p:
                    xyz = elastic_distort(xyz, granularity, magnitude, rng)
        try:
            vox = voxelize(xyz, self.cfg.voxel_size, rng if quantization == "random" else None)
        except VoxelGridError as exc:
            raise DataFormatError(f"{self.meta.name} scene {scene_id}", str(exc)) from None
        if quantization == "random":
            voxel_labels = np.take(labels, vox.pick)
        else:
            voxel_labels = voxel_majority(vox, labels, self.meta.num_classes)
        feats = self._features(scene, xyz, vox, quantization, rng if augment else None)
        # each voxel's point: the one drawn (random quantization) or the mean of its points (mean)
        sampled = np.take(xyz, vox.pick, axis=0).astype(np.float32) if quantization == "random" else voxel_mean(vox, xyz)
        return {"coords": vox.coords, "feats": feats, "labels": voxel_labels, "inverse": vox.inverse,
                "point_labels": labels, "points": points, "scene": scene_id, "sampled_points": sampled}

    def _features(self, scene, xyz, vox, quantization, rng) -> np.ndarray:
        def per_voxel(values):
            values = np.asarray(values).reshape(len(xyz), -1)
            if quantization == "random":
                return np.take(values, vox.pick, axis=0).astype(np.float32)  # take: ~4x faster than rows[...]
            return voxel_mean(vox, values)

        columns = []
        for name in self.features:
            if name == "rgb":
                rgb = per_voxel(scene["color"])
                if rng is not None:
                    rgb = augment_colors(rgb, self.cfg.augment, rng)
                columns.append(rgb / 255.0 - 0.5)
            elif name == "xyz":
                columns.append(per_voxel(xyz))
            elif name == "remission":
                columns.append(per_voxel(scene["remission"]))
            elif name == "normal":
                columns.append(per_voxel(scene["normal"]))
            else:  # "ones", validated in check_features
                columns.append(np.ones((len(vox.starts), 1), dtype=np.float32))
        return np.concatenate(columns, axis=1).astype(np.float32, copy=False)

    def voxel_counts(self) -> np.ndarray:
        """Voxels per scene at cfg.voxel_size without augmentation, int64 [len(self)]; cached in
        root/voxel_counts.json (used by the batch sampler to pack scenes under limit_numpoints)."""
        cache_path = self.root / "voxel_counts.json"
        key = repr(float(self.cfg.voxel_size))
        cache = {}
        if cache_path.is_file():
            with open(cache_path) as f:
                cache = json.load(f)
        known = cache.get(key, {})
        missing = [s for s in self.scene_ids if s not in known]
        position = {s: i for i, s in enumerate(self.scene_ids)}
        for scene_id in missing:
            known[scene_id] = int(len(self.get_view(position[scene_id])["coords"]))
        if missing:
            cache[key] = known
            try:
                atomic_write_json(cache_path, cache)
            except OSError:  # read-only data root: recompute next time
                pass
        return np.array([known[s] for s in self.scene_ids], dtype=np.int64)


def check_features(features: list[str], available: set[str], dataset: str) -> int:
    """Validate feature names against what `dataset` provides; returns the channel count."""
    for name in features:
        if name not in FEATURE_CHANNELS:
            raise ValueError(f"data.features: unknown feature '{name}' (choose from {', '.join(FEATURE_CHANNELS)})")
        if name not in available and name not in ("xyz", "ones"):
            raise ValueError(f"data.features: dataset '{dataset}' has no '{name}' (it provides {', '.join(sorted(available))})")
    if not features:
        raise ValueError("data.features: at least one feature is needed")
    return sum(FEATURE_CHANNELS[n] for n in features)


def check_scene_arrays(path: Path, coord: np.ndarray, label: np.ndarray, num_classes: int) -> None:
    """One-line errors for loaded arrays that are empty, inconsistent or out of the label range."""
    if coord.ndim != 2 or coord.shape[1] != 3 or len(coord) == 0:
        raise DataFormatError(path, f"expected non-empty coordinates [P, 3], got shape {coord.shape}")
    if label.shape != (len(coord),):
        raise DataFormatError(path, f"{label.shape[0] if label.ndim else 0} labels for {len(coord)} points")
    bad = (label >= num_classes) | ((label < 0) & (label != IGNORE_INDEX))
    if bad.any():
        raise DataFormatError(path, f"label id {int(label[bad][0])} out of range 0..{num_classes - 1} / {IGNORE_INDEX}")
