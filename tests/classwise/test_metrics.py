"""Stamping and the per-class pattern metrics against closed forms and independent references."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from anatomy_jax.classwise import (anomaly_index, box_mass, flagged_classes, mask_area, mask_boundary_ratio, mask_centroid,
                                   mask_total_variation, mass_near_box, pattern_success_rate, stamp_soft)


def test_stamp_soft_keeps_the_image_under_a_zero_mask_and_pastes_the_pattern_under_a_full_one():
    x = jax.random.uniform(jax.random.key(0), (3, 6, 5, 2))
    p = jax.random.uniform(jax.random.key(1), (6, 5, 2))
    np.testing.assert_allclose(stamp_soft(x, jnp.zeros((6, 5)), p), x)
    np.testing.assert_allclose(stamp_soft(x, jnp.ones((6, 5)), p), jnp.broadcast_to(p, x.shape))
    half = stamp_soft(x, jnp.full((6, 5), 0.25), p)
    np.testing.assert_allclose(half, 0.75 * x + 0.25 * p, rtol=1e-6)
    with pytest.raises(AssertionError):
        stamp_soft(x, jnp.zeros((5, 6)), p)


def test_anomaly_index_matches_scipy_mad_and_flags_only_small_outliers():
    rng = np.random.default_rng(0)
    values = rng.uniform(0.1, 0.2, 10)
    values[3], values[7] = 0.01, 0.6  # one unusually small mask, one unusually large
    # Neural Cleanse's constant 1.4826 (scipy's normal-consistent scale is 1.482602...)
    expected = np.abs(values - np.median(values)) / (1.4826 * stats.median_abs_deviation(values, scale=1.0))
    np.testing.assert_allclose(anomaly_index(values), expected, rtol=1e-12)
    assert flagged_classes(values) == [3]  # the large one is an outlier too, but not a small mask


def test_anomaly_index_refuses_too_few_values():
    with pytest.raises(ValueError, match="at least 3"):
        anomaly_index([0.1, 0.2])


def test_geometry_of_a_square_mask():
    masks = np.zeros((2, 8, 8), np.float32)
    masks[0, 5:8, 5:8] = 1.0  # a 3x3 square in the bottom-right corner
    masks[1, 0, 0] = 1.0
    masks[1, 2, 6] = 3.0
    np.testing.assert_allclose(mask_area(masks), [9 / 64, 4 / 64])
    np.testing.assert_allclose(mask_centroid(masks), [[6, 6], [(0 + 2 * 3) / 4, (0 + 6 * 3) / 4]])
    # boundary length inside the image: the square touches two image edges, so 3 + 3 unit edges remain
    assert float(mask_total_variation(masks)[0]) == pytest.approx(6.0)
    assert float(mask_total_variation(masks)[1]) == pytest.approx(2 + 4 * 3)
    inner = np.zeros((1, 8, 8), np.float32)
    inner[0, 2:5, 2:5] = 1.0  # a square away from the edges: boundary 4 s, sqrt(area) s
    assert float(mask_boundary_ratio(inner)[0]) == pytest.approx(4.0)
    assert float(mask_boundary_ratio(np.kron(np.ones((1, 1, 1)), np.tile([[1, 0], [0, 1]], (4, 4))))[0]) > 4.0
    np.testing.assert_allclose(box_mass(masks, (6, 6, 8, 8)), [4 / 9, 0.0])
    np.testing.assert_allclose(mass_near_box(masks, (6, 6, 8, 8), margin=1), [1.0, 0.0])
    # rows 0..2 and cols 2..6 lie within 2 px of the box: (2, 6) does (mass 3 of 4), (0, 0) does not
    np.testing.assert_allclose(mass_near_box(masks, (0, 4, 1, 5), margin=2), [0.0, 0.75])
    with pytest.raises(ValueError, match="exclusive"):
        box_mass(masks, (6, 6, 6, 8))


def test_pattern_success_rate_counts_other_classes_only():
    """A linear 'model' whose class-k logit is the mean of channel k: stamping a full mask with a
    pattern lit only in channel k makes every image class k."""
    k_classes, n = 3, 50
    x = jax.random.uniform(jax.random.key(0), (n, 4, 4, k_classes)) * 0.5
    y = jnp.arange(n) % k_classes

    def apply_fn(variables, z):
        return z.mean(axis=(1, 2)) * variables

    masks = jnp.stack([jnp.ones((4, 4)), jnp.ones((4, 4)), jnp.zeros((4, 4))])
    patterns = jnp.eye(k_classes)[:, None, None, :] * jnp.ones((k_classes, 4, 4, k_classes))
    asr = pattern_success_rate(apply_fn, 1.0, x, y, masks, patterns, batch_size=16)
    z = np.asarray(x).mean(axis=(1, 2))
    clean_rate = np.mean(z[np.asarray(y) != 2].argmax(-1) == 2)  # class 2's empty mask: the clean rate
    np.testing.assert_allclose(asr, [1.0, 1.0, clean_rate], rtol=1e-6)
