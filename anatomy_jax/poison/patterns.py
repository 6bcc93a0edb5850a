"""Visual patterns (triggers): pixel values, a mask and a placement, stamped by a pure function.

A pattern is stored at full image size so that patterns of different kinds stack into one array
and can be selected per image inside jitted code:

* `image` (H, W, C): the pattern's pixel values in [0, 1] (signed noise in [-1, 1] when additive),
  with a patch placed at its fixed corner, or at the top-left corner when its location is random;
* `mask` (H, W, 1): 1 where the pattern is, 0 elsewhere;
* `alpha`: opacity (pasted and blended kinds) or amplitude (additive noise);
* `additive`: 1.0 for additive noise (x + alpha * noise, clipped to [0, 1]), else 0.0 (blend);
* `max_offset` (2,): the largest (row, column) shift of a random-location patch; (0, 0) when fixed.

Stamping is `x * (1 - alpha * m) + alpha * m * p` (paste for alpha = 1, blend otherwise), or
`clip(x + alpha * m * p, 0, 1)` for additive noise, with `p` and `m` shifted by the image's offset.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np

PATTERN_KINDS = ("solid", "checkerboard", "random", "blend", "noise")
PATCH_KINDS = ("solid", "checkerboard", "random")
LOCATIONS = ("bottom-right", "bottom-left", "top-right", "top-left", "random")
_DEFAULT_ALPHA = {"solid": 1.0, "checkerboard": 1.0, "random": 1.0, "blend": 0.2, "noise": 0.1}


@dataclasses.dataclass(frozen=True)
class PatternSpec:
    """How a pattern looks and where it goes.

    kind: `solid` (white square), `checkerboard`, `random` (random binary square, from `seed`),
      `blend` (a fixed random image blended over the whole image with opacity `alpha`) or `noise`
      (a fixed additive noise image in [-1, 1] scaled by `alpha`).
    size: side of the square patch in pixels (patch kinds only).
    location: a fixed corner, or `random` (drawn once per image, so it never moves between epochs).
    alpha: opacity / amplitude in (0, 1]; None picks the kind's default (1 for patches, 0.2 for
      blend, 0.1 for noise).
    seed: seed of the random pattern contents (`random`, `blend`, `noise`).
    """

    kind: str = "checkerboard"
    size: int = 3
    location: str = "bottom-right"
    alpha: float | None = None
    seed: int = 0

    @property
    def is_patch(self) -> bool:
        return self.kind in PATCH_KINDS

    @property
    def opacity(self) -> float:
        return _DEFAULT_ALPHA[self.kind] if self.alpha is None else float(self.alpha)

    @property
    def name(self) -> str:
        if self.is_patch:
            return f"{self.kind}{self.size}x{self.size}@{self.location}"
        return f"{self.kind}(alpha={self.opacity:g})"

    def validate(self, image_shape: tuple[int, int, int]) -> None:
        """Raises ValueError if this pattern cannot be stamped on images of `image_shape`."""
        if self.kind not in PATTERN_KINDS:
            raise ValueError(f"unknown pattern kind {self.kind!r}; choose one of {', '.join(PATTERN_KINDS)}")
        if self.location not in LOCATIONS:
            raise ValueError(f"unknown pattern location {self.location!r}; choose one of {', '.join(LOCATIONS)}")
        if not 0.0 < self.opacity <= 1.0:
            raise ValueError(f"pattern alpha must be in (0, 1], got {self.opacity}")
        if len(image_shape) != 3:
            raise ValueError(f"image shape must be (H, W, C), got {image_shape}")
        h, w, _ = image_shape
        if self.is_patch and not 1 <= self.size <= min(h, w):
            raise ValueError(f"pattern size {self.size} does not fit images of {h}x{w}: it must be in "
                             f"[1, {min(h, w)}]")


class Patterns(NamedTuple):
    """K patterns stacked along a leading axis (see the module docstring for each field)."""

    image: jax.Array  # (K, H, W, C)
    mask: jax.Array  # (K, H, W, 1)
    alpha: jax.Array  # (K,)
    additive: jax.Array  # (K,)
    max_offset: jax.Array  # (K, 2) int32


def _patch_values(spec: PatternSpec, channels: int) -> np.ndarray:
    s = spec.size
    if spec.kind == "solid":
        return np.ones((s, s, channels), np.float32)
    if spec.kind == "checkerboard":
        board = (np.add.outer(np.arange(s), np.arange(s)) % 2 == 0).astype(np.float32)
        return np.repeat(board[..., None], channels, axis=-1)
    key = jax.random.key(spec.seed)
    return np.asarray(jax.random.bernoulli(key, 0.5, (s, s, channels)), np.float32)


def make_patterns(specs: list[PatternSpec] | tuple[PatternSpec, ...], image_shape: tuple[int, int, int]) -> Patterns:
    """Builds the stacked pattern arrays for `specs` on images of `image_shape` (H, W, C)."""
    h, w, c = image_shape
    images, masks, alphas, additive, offsets = [], [], [], [], []
    for spec in specs:
        spec.validate(image_shape)
        image = np.zeros((h, w, c), np.float32)
        mask = np.zeros((h, w, 1), np.float32)
        max_offset = (0, 0)
        if spec.is_patch:
            s = spec.size
            row = h - s if spec.location.startswith("bottom") else 0
            col = w - s if spec.location.endswith("right") else 0
            if spec.location == "random":
                row, col, max_offset = 0, 0, (h - s, w - s)
            image[row:row + s, col:col + s] = _patch_values(spec, c)
            mask[row:row + s, col:col + s] = 1.0
        elif spec.kind == "blend":
            image[:] = np.asarray(jax.random.uniform(jax.random.key(spec.seed), (h, w, c)))
            mask[:] = 1.0
        else:  # noise
            image[:] = np.asarray(jax.random.uniform(jax.random.key(spec.seed), (h, w, c), minval=-1.0))
            mask[:] = 1.0
        images.append(image)
        masks.append(mask)
        alphas.append(spec.opacity)
        additive.append(1.0 if spec.kind == "noise" else 0.0)
        offsets.append(max_offset)
    if not specs:  # no pattern (clean training): K = 0, and `stamp` leaves images untouched
        return Patterns(jnp.zeros((0, h, w, c)), jnp.zeros((0, h, w, 1)), jnp.zeros((0,)), jnp.zeros((0,)),
                        jnp.zeros((0, 2), jnp.int32))
    return Patterns(jnp.asarray(np.stack(images)), jnp.asarray(np.stack(masks)),
                    jnp.asarray(alphas, jnp.float32), jnp.asarray(additive, jnp.float32),
                    jnp.asarray(offsets, jnp.int32))


def image_offsets(key: jax.Array, indices: jax.Array, max_offset: jax.Array) -> jax.Array:
    """Per-image (row, col) offsets in [0, max_offset], from `key` folded with each image index.

    `max_offset` is (2,) or (len(indices), 2). The same index always gets the same offset.
    """
    def one(i, m):
        u = jax.random.uniform(jax.random.fold_in(key, i), (2,))
        return jnp.minimum(jnp.floor(u * (m + 1)).astype(jnp.int32), m)

    max_offset = jnp.broadcast_to(max_offset, (indices.shape[0], 2))
    return jax.vmap(one)(indices, max_offset)


def stamp_everywhere(images: jax.Array, patterns: Patterns, k: int = 0) -> jax.Array:
    """Pattern `k` stamped at its own place on every float image (B, H, W, C) (no random offset):
    the trigger as an attack applies it at test time."""
    n = images.shape[0]
    return stamp(images, jnp.full((n,), k, jnp.int32), jnp.zeros((n, 2), jnp.int32), patterns)


def stamp(images: jax.Array, pattern_ids: jax.Array, offsets: jax.Array, patterns: Patterns) -> jax.Array:
    """Stamps pattern `pattern_ids[i]` on float image `i` (id -1: left untouched).

    images: (B, H, W, C) floats in [0, 1]; pattern_ids: (B,) int; offsets: (B, 2) int.
    """
    chex.assert_rank(images, 4)
    chex.assert_shape(pattern_ids, (images.shape[0],))
    chex.assert_shape(offsets, (images.shape[0], 2))
    if patterns.image.shape[1:] != images.shape[1:]:
        raise ValueError(f"patterns are for images {patterns.image.shape[1:]}, got images {images.shape[1:]}")
    if patterns.image.shape[0] == 0:
        return images

    def one(x, pid, off):
        k = jnp.maximum(pid, 0)
        p = jnp.roll(patterns.image[k], (off[0], off[1]), axis=(0, 1))
        m = jnp.roll(patterns.mask[k], (off[0], off[1]), axis=(0, 1)) * patterns.alpha[k]
        blended = x * (1.0 - m) + m * p
        added = jnp.clip(x + m * p, 0.0, 1.0)
        out = jnp.where(patterns.additive[k] > 0, added, blended)
        return jnp.where(pid >= 0, out, x)

    return jax.vmap(one)(images, pattern_ids, offsets)
