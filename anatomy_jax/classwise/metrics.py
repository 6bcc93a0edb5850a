"""What a class pattern is: its success rate, size, place and shape, and the Neural Cleanse anomaly index.

Masks are (K, H, W) in [0, 1]. Centroids are 0-based pixel coordinates (row, col); boxes are
(row0, col0, row1, col1) with exclusive ends.
"""

from __future__ import annotations

from typing import Callable, Sequence

import chex
import jax
import jax.numpy as jnp
import numpy as np

from anatomy_jax.classwise.stamping import stamp_soft

ApplyFn = Callable[..., jax.Array]
Box = Sequence[int]

MAD_SCALE = 1.4826  # makes the median absolute deviation a consistent estimator of a normal's sigma


def mask_area(masks: jax.Array) -> jax.Array:
    """(K,) the mask L1 as a share of the image area (mean of the mask)."""
    chex.assert_rank(masks, 3)
    return masks.mean(axis=(1, 2))


def mask_centroid(masks: jax.Array) -> jax.Array:
    """(K, 2) the mask's centre of mass (row, col) in pixels (NaN for an all-zero mask)."""
    chex.assert_rank(masks, 3)
    _, h, w = masks.shape
    total = masks.sum(axis=(1, 2))
    rows = (masks.sum(axis=2) * jnp.arange(h)).sum(axis=1) / total
    cols = (masks.sum(axis=1) * jnp.arange(w)).sum(axis=1) / total
    return jnp.stack([rows, cols], axis=-1)


def check_box(box: Box, shape: tuple[int, int]) -> tuple[int, int, int, int]:
    """The box as ints; ValueError unless 0 <= row0 < row1 <= H and 0 <= col0 < col1 <= W."""
    if len(box) != 4:
        raise ValueError(f"a box is (row0, col0, row1, col1), got {box}")
    r0, c0, r1, c1 = (int(v) for v in box)
    h, w = shape
    if not (0 <= r0 < r1 <= h and 0 <= c0 < c1 <= w):
        raise ValueError(f"box {list(box)} is empty or outside a {h}x{w} image (ends are exclusive)")
    return r0, c0, r1, c1


def grow_box(box: Box, margin: int, shape: tuple[int, int]) -> tuple[int, int, int, int]:
    """The box widened by `margin` pixels on every side, clipped to the image: the pixels within
    `margin` (Chebyshev distance) of the box."""
    r0, c0, r1, c1 = check_box(box, shape)
    return max(r0 - margin, 0), max(c0 - margin, 0), min(r1 + margin, shape[0]), min(c1 + margin, shape[1])


def box_mass(masks: jax.Array, box: Box) -> jax.Array:
    """(K,) the share of each mask's mass inside `box`."""
    chex.assert_rank(masks, 3)
    r0, c0, r1, c1 = check_box(box, masks.shape[1:])
    return masks[:, r0:r1, c0:c1].sum(axis=(1, 2)) / masks.sum(axis=(1, 2))


def mass_near_box(masks: jax.Array, box: Box, margin: int = 2) -> jax.Array:
    """(K,) the share of each mask's mass within `margin` pixels of `box`."""
    return box_mass(masks, grow_box(box, margin, masks.shape[1:]))


def mask_total_variation(masks: jax.Array) -> jax.Array:
    """(K,) anisotropic total variation: the sum of |differences| between vertical and horizontal
    neighbours (for a binary mask, the length of its boundary in pixels, image edges excluded)."""
    chex.assert_rank(masks, 3)
    return (jnp.abs(jnp.diff(masks, axis=1)).sum(axis=(1, 2)) + jnp.abs(jnp.diff(masks, axis=2)).sum(axis=(1, 2)))


def mask_boundary_ratio(masks: jax.Array) -> jax.Array:
    """(K,) total variation / sqrt(mask L1 in pixels): the boundary relative to the size, a shape
    measure free of area (4 for a square inside the image, larger for fragmented or ragged masks), so
    masks of different areas can be compared for simplicity."""
    return mask_total_variation(masks) / jnp.sqrt(masks.sum(axis=(1, 2)))


def anomaly_index(values: np.ndarray | jax.Array) -> np.ndarray:
    """Neural Cleanse's MAD anomaly index of each value: |v - median| / (1.4826 * MAD), MAD the
    median of |v - median|. Where MAD is 0, values equal to the median score 0 and others inf."""
    v = np.asarray(values, np.float64)
    if v.ndim != 1 or len(v) < 3:
        raise ValueError(f"anomaly_index needs a 1-d array of at least 3 values, got shape {v.shape}")
    deviation = np.abs(v - np.median(v))
    mad = MAD_SCALE * np.median(deviation)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(deviation == 0, 0.0, deviation / mad)


def flagged_classes(values: np.ndarray | jax.Array, threshold: float = 2.0) -> list[int]:
    """The classes Neural Cleanse flags: mask L1 below the median and anomaly index >= threshold."""
    v = np.asarray(values, np.float64)
    index = anomaly_index(v)
    return [int(k) for k in np.flatnonzero((v < np.median(v)) & (index >= threshold))]


def pattern_success_rate(apply_fn: ApplyFn, variables, images: jax.Array, labels: jax.Array, masks: jax.Array,
                         patterns: jax.Array, classes: jax.Array | None = None, batch_size: int = 500) -> jax.Array:
    """(K,) for each class k (default 0..K-1): the share of the images whose label is not k that
    `apply_fn(variables, x)` classifies as k once stamped with (masks[k], patterns[k])."""
    chex.assert_rank([images, labels, masks, patterns], [4, 1, 3, 4])
    classes = jnp.arange(len(masks)) if classes is None else jnp.asarray(classes)
    n = len(images)
    batch_size = min(batch_size, n)
    pad = -n % batch_size
    x = jnp.concatenate([images, jnp.zeros((pad, *images.shape[1:]), images.dtype)])
    y = jnp.concatenate([labels, jnp.full((pad,), -1, labels.dtype)])  # -1: padding, never counted
    return _success_rate(apply_fn, variables, x.reshape(-1, batch_size, *images.shape[1:]),
                         y.reshape(-1, batch_size), masks, patterns, classes)


def _success_rate_impl(apply_fn, variables, x_batches, y_batches, masks, patterns, classes):
    def per_class(mask, pattern, k):
        def per_batch(batch):
            x, y = batch
            hit = (apply_fn(variables, stamp_soft(x, mask, pattern)).argmax(-1) == k) & (y != k) & (y >= 0)
            return hit.sum(), ((y != k) & (y >= 0)).sum()

        hits, counts = jax.lax.map(per_batch, (x_batches, y_batches))
        return hits.sum() / jnp.maximum(counts.sum(), 1)

    return jax.vmap(per_class)(masks, patterns, classes)


_success_rate = jax.jit(_success_rate_impl, static_argnums=0)
