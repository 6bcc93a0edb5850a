"""On-device augmentation of a float image batch (jittable).

Randomness is drawn per example: example i's crop and flip come from `fold_in(key, indices[i])`
(default: its position in the batch). A batch split over data-parallel devices therefore gets
exactly the augmentation it would get on one device, whatever the device count.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def _example_keys(key: jax.Array, n: int, indices: jax.Array | None) -> jax.Array:
    indices = jnp.arange(n) if indices is None else indices
    return jax.vmap(lambda i: jax.random.fold_in(key, i))(indices)


def random_crop(key: jax.Array, images: jax.Array, padding: int, indices: jax.Array | None = None) -> jax.Array:
    """Pads each (N, H, W, C) image by `padding` zeros and crops a random H x W window."""
    if padding <= 0:
        return images
    n, h, w, _ = images.shape
    padded = jnp.pad(images, ((0, 0), (padding, padding), (padding, padding), (0, 0)))

    def crop(k, img):
        off = jax.random.randint(k, (2,), 0, 2 * padding + 1)
        return jax.lax.dynamic_slice(img, (off[0], off[1], 0), (h, w, img.shape[-1]))

    return jax.vmap(crop)(_example_keys(key, n, indices), padded)


def random_flip(key: jax.Array, images: jax.Array, indices: jax.Array | None = None) -> jax.Array:
    """Mirrors each image left-right with probability 1/2."""
    flips = jax.vmap(lambda k: jax.random.bernoulli(k, 0.5))(_example_keys(key, images.shape[0], indices))
    return jnp.where(flips[:, None, None, None], images[:, :, ::-1, :], images)


def augment(key: jax.Array, images: jax.Array, *, crop_padding: int = 0, flip: bool = False,
            indices: jax.Array | None = None) -> jax.Array:
    """Random crop with zero padding, then (optionally) a random horizontal flip; `indices` are the
    examples' positions in the whole batch (see the module docstring)."""
    crop_key, flip_key = jax.random.split(key)
    images = random_crop(crop_key, images, crop_padding, indices)
    return random_flip(flip_key, images, indices) if flip else images
