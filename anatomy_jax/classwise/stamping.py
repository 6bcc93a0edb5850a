"""Soft stamping of a mask and a pattern, and the unconstrained parametrisation the search optimises."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp


def stamp_soft(images: jax.Array, mask: jax.Array, pattern: jax.Array) -> jax.Array:
    """x' = (1 - m) * x + m * p for images (n, H, W, C) in [0, 1], a mask (H, W) in [0, 1] shared
    over channels and a pattern (H, W, C) in [0, 1]."""
    chex.assert_rank([images, mask, pattern], [4, 2, 3])
    chex.assert_equal_shape_suffix([images, pattern], 3)
    chex.assert_equal(mask.shape, images.shape[1:3])
    m = mask[..., None]
    return (1.0 - m) * images + m * pattern


def mask_from_logits(mask_logits: jax.Array) -> jax.Array:
    """The mask in (0, 1) from unconstrained logits (Neural Cleanse's tanh / 2 + 1/2 = sigmoid(2 z))."""
    return jnp.tanh(mask_logits) / 2.0 + 0.5


def pattern_from_logits(pattern_logits: jax.Array) -> jax.Array:
    """The pattern in the valid pixel range (0, 1) from unconstrained logits."""
    return jnp.tanh(pattern_logits) / 2.0 + 0.5


def logits_from_unit(values: jax.Array, eps: float = 1e-3) -> jax.Array:
    """Logits whose `*_from_logits` is `values` (clipped to [eps, 1 - eps]): to start from an image."""
    return jnp.arctanh(2.0 * jnp.clip(values, eps, 1.0 - eps) - 1.0)
