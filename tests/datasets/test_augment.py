"""Each augmentation does what its configuration says; get_view applies exactly its transform."""
import numpy as np
import pytest

from datasets.transforms import (apply_affine, augment_colors, auto_contrast, dropout_mask, elastic_distort,
                                 random_affine)
from lib.config.schema_data import AugmentConfig


def _fixed(**kw):
    cfg = AugmentConfig(rotate_x=[0, 0], rotate_y=[0, 0], rotate_z=[0, 0], scale=[1, 1], flip_x_p=0, flip_y_p=0,
                        translate=[0, 0, 0])
    for k, v in kw.items():
        setattr(cfg, k, v)
    return cfg


def test_fixed_rotation_scale_about_z():
    matrix, shift = random_affine(_fixed(rotate_z=[0.3, 0.3], scale=[2, 2]), np.random.default_rng(0))
    c, s = np.cos(0.3), np.sin(0.3)
    np.testing.assert_allclose(matrix, 2 * np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]), atol=1e-12)
    np.testing.assert_array_equal(shift, 0)
    pts = np.array([[1.0, 0.0, 0.5]], np.float32)
    np.testing.assert_allclose(apply_affine(pts, matrix, np.array([1.0, 2.0, 3.0])),
                               [[2 * c + 1, 2 * s + 2, 1.0 + 3]], rtol=1e-6)


@pytest.mark.parametrize("axis", ["x", "y", "z"])
def test_rotation_stays_within_per_axis_bounds(axis):
    bounds = {"x": [0.05, 0.1], "y": [-0.2, -0.1], "z": [1.0, 2.0]}
    rng = np.random.default_rng(1)
    angles = []
    for _ in range(200):
        m, _ = random_affine(_fixed(**{f"rotate_{axis}": bounds[axis]}), rng)
        a, b = {"x": (2, 1), "y": (0, 2), "z": (1, 0)}[axis]  # sin and cos entries of a single-axis rotation
        angles.append(np.arctan2(m[a, b] if axis != "y" else m[0, 2], m[b, b] if axis != "y" else m[0, 0]))
    angles = np.array(angles)
    lo, hi = bounds[axis]
    assert angles.min() >= lo - 1e-9 and angles.max() <= hi + 1e-9
    assert angles.max() - angles.min() > 0.8 * (hi - lo)  # the whole range is used


def test_scale_flip_translation():
    rng = np.random.default_rng(2)
    draws = [random_affine(_fixed(scale=[0.8, 1.2], flip_x_p=1.0, translate=[0.5, 0.1, 0.0]), rng) for _ in range(200)]
    for m, t in draws:
        assert m[0, 0] < 0 and m[1, 1] > 0  # x always mirrored, y never
        assert 0.8 <= abs(m[0, 0]) <= 1.2 and abs(m[0, 0]) == pytest.approx(m[1, 1])
        assert abs(t[0]) <= 0.5 and abs(t[1]) <= 0.1 and t[2] == 0
    m, _ = random_affine(_fixed(flip_y_p=1.0), rng)
    np.testing.assert_allclose(m, np.diag([1.0, -1.0, 1.0]))


def test_elastic_distortion_is_smooth_and_bounded():
    rng = np.random.default_rng(3)
    xyz = rng.uniform(0, 4, (20000, 3)).astype(np.float32)
    moved = elastic_distort(xyz, 0.2, 0.4, np.random.default_rng(4))
    disp = moved - xyz
    assert np.abs(disp).max() < 0.4 * 3 and np.abs(disp).mean() > 1e-3
    # neighbours within 2 cm move almost alike, far points independently
    order = np.argsort(xyz[:, 0])
    near = np.linalg.norm(xyz[order[1:]] - xyz[order[:-1]], axis=1) < 0.02
    diff_near = np.linalg.norm(disp[order[1:]] - disp[order[:-1]], axis=1)[near]
    diff_far = np.linalg.norm(disp[:1000] - disp[-1000:], axis=1)
    assert diff_near.mean() < 0.3 * diff_far.mean()


def test_chromatic_augmentations():
    rng = np.random.default_rng(5)
    rgb = rng.uniform(60, 120, (5000, 3)).astype(np.float32)
    stretched = auto_contrast(rgb.copy(), rng, blend=1.0)
    np.testing.assert_allclose(stretched.min(axis=0), 0, atol=1e-3)
    np.testing.assert_allclose(stretched.max(axis=0), 255, atol=1e-3)
    cfg = AugmentConfig(autocontrast_p=0, color_translate_p=0, color_jitter_p=1, color_jitter_std=0.05)
    noisy = augment_colors(rgb.copy(), cfg, rng)
    assert np.std(noisy - rgb) == pytest.approx(0.05 * 255, rel=0.05)
    cfg = AugmentConfig(autocontrast_p=0, color_translate_p=1, color_translate_ratio=0.1, color_jitter_p=0)
    shifted = augment_colors(rgb.copy(), cfg, rng) - rgb
    assert np.ptp(shifted, axis=0).max() < 1e-3 and np.abs(shifted).max() <= 0.1 * 255 + 1e-3
    assert augment_colors(np.full((10, 3), 250, np.float32), AugmentConfig(color_translate_ratio=1.0), rng).max() <= 255


def test_dropout():
    rng = np.random.default_rng(6)
    assert dropout_mask(1000, AugmentConfig(dropout_p=0.0), rng) is None
    keep = dropout_mask(100000, AugmentConfig(dropout_p=1.0, dropout_ratio=0.3), rng)
    assert keep.mean() == pytest.approx(0.7, abs=0.01)


def test_get_view_applies_exactly_its_transform(scannet_root):
    import datasets
    from lib.config.schema_data import DataConfig

    ds = datasets.build_dataset(DataConfig(dataset="scannet", root=str(scannet_root), voxel_size=0.05), "val")
    item = ds.get_view(1, rotation_z=np.pi / 2, flip_x=True, scale=2.0)
    pts = item["points"].astype(np.float64)
    centre = (pts.min(axis=0) + pts.max(axis=0)) / 2
    p = pts - centre
    # rotate +90 degrees about z: (x, y) -> (-y, x); then mirror x; then scale 2
    expected = 2.0 * np.stack([p[:, 1], p[:, 0], p[:, 2]], axis=1)
    cells = np.floor(expected / 0.05)
    cells -= cells.min(axis=0)
    got = item["coords"][item["inverse"]]
    assert np.mean(np.all(got == cells, axis=1)) > 0.999  # points on a cell border may round either way
    assert len(item["coords"]) == len(np.unique(cells, axis=0))
    plain = ds.get_view(1)
    np.testing.assert_array_equal(plain["point_labels"], item["point_labels"])
