"""Collate: batch column and offsets; the voxel-budget sampler packs a real dataset's scenes."""
import numpy as np
import torch

from datasets.collate import collate_fn
from lib.engine.voxel_budget import VoxelBudgetBatchSampler


def _item(name, voxels, points=7):
    rng = np.random.default_rng(voxels)
    return {"coords": rng.integers(0, 50, (voxels, 3)).astype(np.int32),
            "feats": rng.random((voxels, 3)).astype(np.float32), "labels": rng.integers(0, 5, voxels),
            "inverse": rng.integers(0, voxels, points), "point_labels": rng.integers(0, 5, points),
            "points": rng.random((points, 3)).astype(np.float32), "scene": name,
            "sampled_points": rng.random((voxels, 3)).astype(np.float32)}


def test_collate_layout():
    items = [_item("a", 4), _item("b", 6), _item("c", 1)]
    batch = collate_fn(items)
    assert batch["coords"].dtype == torch.int32 and batch["coords"].shape == (11, 4)
    assert batch["offsets"].tolist() == [0, 4, 10, 11]
    for b, it in enumerate(items):
        rows = slice(batch["offsets"][b], batch["offsets"][b + 1])
        assert torch.all(batch["coords"][rows, 0] == b)
        np.testing.assert_array_equal(batch["coords"][rows, 1:].numpy(), it["coords"])
        np.testing.assert_array_equal(batch["feats"][rows].numpy(), it["feats"])
        np.testing.assert_array_equal(batch["inverse"][b].numpy(), it["inverse"])
        np.testing.assert_array_equal(batch["point_coords"][rows].numpy(), it["sampled_points"])
    assert batch["point_coords"].dtype == torch.float32
    assert batch["labels"].dtype == torch.int64 and batch["scene"] == ["a", "b", "c"]


def test_budget_sampler_with_dataset(scannet_root):
    import datasets
    from lib.config.schema_data import DataConfig

    ds = datasets.build_dataset(DataConfig(dataset="scannet", root=str(scannet_root), voxel_size=0.05), "train")
    counts = ds.voxel_counts()
    assert len(counts) == len(ds) and counts.min() > 0
    # independent count: occupied cells floor((p - c) / voxel) of the scene's points, c the centre of
    # their bounding box (the un-augmented view voxelizes about it); float64 here, float32 in the
    # loader, so a point on a cell boundary may round the other way: allow 2 cells of slack
    for index, scene_id in enumerate(ds.scene_ids):
        points = np.asarray(ds.load_scene(scene_id)["coord"], dtype=np.float64)
        centre = (points.min(0) + points.max(0)) / 2
        occupied = len(np.unique(np.floor((points - centre) / 0.05), axis=0))
        assert abs(int(counts[index]) - occupied) <= 2, (scene_id, int(counts[index]), occupied)
    sampler = VoxelBudgetBatchSampler(counts, int(counts.max() * 2), max_batch_size=3)
    loader = torch.utils.data.DataLoader(ds, batch_sampler=sampler, collate_fn=collate_fn)
    scenes = [s for batch in loader for s in batch["scene"]]
    assert sorted(scenes) == sorted(ds.scene_ids)
