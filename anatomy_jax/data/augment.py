"""On-device augmentation of a float image batch (jittable, one key per batch)."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def random_crop(key: jax.Array, images: jax.Array, padding: int) -> jax.Array:
    """Pads each (N, H, W, C) image by `padding` zeros and crops a random H x W window."""
    if padding <= 0:
        return images
    n, h, w, _ = images.shape
    padded = jnp.pad(images, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    offsets = jax.random.randint(key, (n, 2), 0, 2 * padding + 1)

    def crop(img, off):
        return jax.lax.dynamic_slice(img, (off[0], off[1], 0), (h, w, img.shape[-1]))

    return jax.vmap(crop)(padded, offsets)


def random_flip(key: jax.Array, images: jax.Array) -> jax.Array:
    """Mirrors each image left-right with probability 1/2."""
    flip = jax.random.bernoulli(key, 0.5, (images.shape[0], 1, 1, 1))
    return jnp.where(flip, images[:, :, ::-1, :], images)


def augment(key: jax.Array, images: jax.Array, *, crop_padding: int = 0, flip: bool = False) -> jax.Array:
    """Random crop with zero padding, then (optionally) a random horizontal flip."""
    crop_key, flip_key = jax.random.split(key)
    images = random_crop(crop_key, images, crop_padding)
    return random_flip(flip_key, images) if flip else images
