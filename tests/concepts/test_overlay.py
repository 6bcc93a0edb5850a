"""Similarity overlays: self-similarity, invariances, shapes."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from anatomy_jax.concepts import peak_location, pixel_to_cell, similarity_overlay


def _acts(seed, shape=(5, 6, 8)):
    return np.asarray(jax.random.normal(jax.random.key(seed), shape))


def test_overlay_of_a_location_with_itself_is_one_there():
    a = _acts(0)
    m = np.asarray(similarity_overlay(a, (2, 3), a))
    assert m.shape == (5, 6)
    assert m[2, 3] == pytest.approx(1.0, abs=1e-6)
    assert peak_location(m) == (2, 3)
    assert np.all(m <= 1 + 1e-6) and np.all(m >= -1 - 1e-6)
    # numpy cosine reference
    ref = a.reshape(-1, 8) @ a[2, 3] / (np.linalg.norm(a.reshape(-1, 8), axis=1) * np.linalg.norm(a[2, 3]))
    np.testing.assert_allclose(m.ravel(), ref, atol=1e-5)


def test_overlay_is_invariant_to_scaling_and_consistent_channel_permutation():
    a, b = _acts(1), _acts(2, (3, 4, 8))
    base = np.asarray(similarity_overlay(a, (1, 1), b))
    perm = np.random.default_rng(0).permutation(8)
    np.testing.assert_allclose(similarity_overlay(3.7 * a, (1, 1), 0.2 * b), base, atol=1e-5)
    np.testing.assert_allclose(similarity_overlay(a[..., perm], (1, 1), b[..., perm]), base, atol=1e-5)
    # an inconsistent permutation changes the map
    assert not np.allclose(similarity_overlay(a[..., perm], (1, 1), b), base, atol=1e-3)


def test_overlay_in_image_pixels_is_upsampled():
    a, b = _acts(3, (4, 4, 8)), _acts(4, (2, 2, 8))
    m = np.asarray(similarity_overlay(a, (7, 0), b, image_size=(8, 8)))  # pixel (7, 0) -> cell (3, 0)
    assert m.shape == (8, 8)
    cell = np.asarray(similarity_overlay(a, (3, 0), b))
    np.testing.assert_allclose(m[np.ix_([0, 7], [0, 7])], cell, atol=1e-5)  # bilinear: the image corners keep theirs
    assert m.min() >= cell.min() - 1e-6 and m.max() <= cell.max() + 1e-6  # interpolation stays within the cells'
    assert pixel_to_cell((27, 27), (28, 28), (7, 7)) == (6, 6)
    with pytest.raises(ValueError, match="outside"):
        similarity_overlay(a, (9, 0), b, image_size=(8, 8))
    with pytest.raises(ValueError, match="channel counts"):
        similarity_overlay(a, (0, 0), b[..., :4])
