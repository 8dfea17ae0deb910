"""The batch contract's point coordinates and the model input built from a batch by input type:
each voxel's sampled point against brute force (mean of its points / one of its points), the
PointBatch built from a collated batch, and a point model trained, validated and tested through
the unchanged engine."""
import types

import numpy as np
import pytest
import torch

from datasets.collate import collate_fn
from datasets.voxel_dataset import VoxelDataset
from lib.config.schema_data import DataConfig
from lib.engine.inputs import InputMaker, make_input
from lib.sparse.tensor import SparseTensor
from lib.structure import PointBatch
from tests.engine import standins as S

VOXEL = 0.25


class MemoryScenes(VoxelDataset):
    """Two random rooms held in memory (the dataset base class does everything else)."""

    def load_scene(self, scene_id):
        g = np.random.default_rng(int(scene_id[-1]))
        coord = (g.random((600, 3)) * [3.0, 2.0, 1.0]).astype(np.float32)
        return {"coord": coord, "label": g.integers(0, 3, 600), "color": g.integers(0, 255, (600, 3)).astype(np.uint8)}


def dataset(augment: bool):
    cfg = DataConfig(voxel_size=VOXEL)
    cfg.augment.elastic_p = 0.0
    return MemoryScenes("/nonexistent", {}, ["room0", "room1"], types.SimpleNamespace(num_classes=3), cfg,
                        ["rgb", "xyz"], augment, seed=3)


def brute_force_means(points: np.ndarray, inverse: np.ndarray, voxels: int) -> np.ndarray:
    centred = points - (points.min(0) + points.max(0)) / 2  # the un-augmented frame: scene centre at 0
    return np.stack([centred[inverse == v].mean(0) for v in range(voxels)])


def test_eval_items_sample_the_mean_of_each_voxel():
    ds = dataset(augment=False)
    item = ds[1]
    sampled = item["sampled_points"]
    assert sampled.dtype == np.float32 and sampled.shape == (len(item["coords"]), 3)
    np.testing.assert_allclose(sampled, brute_force_means(item["points"], item["inverse"], len(sampled)), atol=1e-5)
    view = ds.get_view(1)  # the plain view is the same item
    np.testing.assert_allclose(view["sampled_points"], sampled, atol=1e-6)


def test_training_items_sample_one_point_inside_each_voxel():
    item = dataset(augment=True)[0]
    sampled = item["sampled_points"].astype(np.float64)
    # the sampled point is the point whose xyz feature the voxel carries (random quantization)
    np.testing.assert_array_equal(item["sampled_points"], item["feats"][:, 3:6])
    # and it lies in its voxel: floor(p / voxel) - coords is one shift (the grid origin) for all voxels
    shift = np.floor(sampled / VOXEL) - item["coords"]
    assert (shift == shift[0]).all()


def test_point_batch_from_a_collated_batch():
    ds = dataset(augment=False)
    items = [ds[0], ds[1]]
    batch = collate_fn(items)
    points = make_input(batch, torch.device("cpu"), "points", voxel_size=VOXEL)
    assert isinstance(points, PointBatch) and points.voxel_size == VOXEL
    assert torch.equal(points.coord, torch.from_numpy(np.concatenate([it["sampled_points"] for it in items])))
    assert torch.equal(points.sparse_coords(), batch["coords"])  # same rows as the SparseTensor
    assert points.offset.tolist() == [0, len(items[0]["coords"]), len(items[0]["coords"]) + len(items[1]["coords"])]
    sparse = InputMaker("torch", VOXEL)(batch, torch.device("cpu"))
    assert isinstance(sparse, SparseTensor) and torch.equal(sparse.feats, points.feat)
    with pytest.raises(ValueError, match="unknown model input_type 'voxels'"):
        make_input(batch, torch.device("cpu"), "voxels")


class PointNet(S.ToyNet):
    """A per-point model: consumes PointBatch (coordinates appended to the features)."""

    input_type = "points"

    def __init__(self, in_channels, num_classes, **kw):
        super().__init__(in_channels + 3, num_classes, **kw)
        self.seen = set()

    def forward(self, x):
        self.seen.add(type(x).__name__)
        return super().forward(torch.cat([x.feat, x.coord], dim=1))


def test_a_point_model_trains_validates_and_tests_through_the_engine(tmp_path):
    from lib.engine.launch import run
    from tests.engine import standin_main
    built = []

    def build_model(model_cfg, in_channels, num_classes):
        built.append(PointNet(in_channels, num_classes))
        return built[-1]

    cfg = standin_main.config(["train.iterations=3", "train.val_every=3", "train.progress=false"])
    summary = run(cfg, "train", tmp_path / "run", S.build_dataset, build_model, S.collate)
    assert summary["iterations"] == 3 and summary["metrics"]["miou"] is not None
    assert built[0].seen == {"PointBatch"}
    run(cfg, "test", tmp_path / "test", S.build_dataset, build_model, S.collate, weights=tmp_path / "run" / "last.pth")
    assert built[1].seen == {"PointBatch"}
