"""Voxelization against an independent np.unique reference, and the voxel <-> point maps."""
import numpy as np

from datasets.voxelize import voxel_majority, voxel_mean, voxelize
from lib import IGNORE_INDEX


def _cloud(n=5000, size=0.1, seed=0):
    """Points well inside their cells (no floor ambiguity), and their integer cells."""
    rng = np.random.default_rng(seed)
    cells = rng.integers(-20, 20, (n, 3))
    xyz = ((cells + rng.uniform(0.1, 0.9, (n, 3))) * size).astype(np.float32)
    return xyz, cells


def test_coords_and_inverse_match_unique_reference():
    xyz, cells = _cloud()
    vox = voxelize(xyz, 0.1)
    shifted = cells - cells.min(axis=0)
    reference, ref_counts = np.unique(shifted, axis=0, return_counts=True)
    assert vox.coords.dtype == np.int32 and vox.inverse.dtype == np.int64
    got = vox.coords[np.lexsort(vox.coords.T[::-1])]
    np.testing.assert_array_equal(got, reference)
    np.testing.assert_array_equal(vox.coords[vox.inverse], shifted)  # every point lands in its own cell
    assert sorted(vox.counts.tolist()) == sorted(ref_counts.tolist())
    assert vox.counts.sum() == len(xyz)


def test_random_pick_is_a_member_and_varies():
    xyz, _ = _cloud(3000, seed=1)
    picks = []
    for seed in range(30):
        vox = voxelize(xyz, 0.1, np.random.default_rng(seed))
        np.testing.assert_array_equal(vox.inverse[vox.pick], np.arange(len(vox.coords)))
        picks.append(vox.pick[vox.counts > 1])
    assert len({tuple(p) for p in picks}) > 1


def test_mean_and_majority():
    xyz = np.array([[0.01, 0, 0], [0.02, 0, 0], [0.03, 0, 0], [0.5, 0, 0], [0.51, 0, 0], [0.9, 0, 0]], np.float32)
    vox = voxelize(xyz, 0.1)
    values = np.arange(12, dtype=np.float32).reshape(6, 2)
    means = voxel_mean(vox, values)
    for v in range(len(vox.coords)):
        np.testing.assert_allclose(means[v], values[vox.inverse == v].mean(axis=0))
    labels = np.array([2, 1, 1, 3, 0, IGNORE_INDEX])
    out = voxel_majority(vox, labels, num_classes=4)
    assert out[vox.inverse[0]] == 1  # majority
    assert out[vox.inverse[3]] == 0  # tie 3 vs 0 -> smallest class
    assert out[vox.inverse[5]] == IGNORE_INDEX  # nothing valid
    labels = np.array([IGNORE_INDEX, IGNORE_INDEX, 2, 3, 3, 1])
    assert voxel_majority(vox, labels, 4)[vox.inverse[0]] == 2  # valid labels win over ignore


def test_point_just_below_a_top_cell_boundary_keeps_its_own_voxel():
    # z / 0.05 of the first point rounds up to the boundary 1000.0 in float32; the cells of the
    # three points are (0, 0, 999), (0, 1, -1000), (0, 0, -1000): three different voxels
    xyz = np.array([[0, 0, 49.999996], [0, 0.05, -49.99], [0, 0, -49.99]], dtype=np.float32)
    vox = voxelize(xyz, 0.05)
    assert len(set(vox.inverse.tolist())) == 3
    coords = vox.coords[vox.inverse]
    assert coords[0, 2] - coords[2, 2] == 1999 and coords[1, 1] - coords[2, 1] == 1
