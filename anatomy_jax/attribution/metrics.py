"""How good a saliency map is: the pointing game, deletion / insertion curves and their areas, a
map's mass inside a box, and the rank correlation of two maps (the model-randomisation check).

Maps are (n, H, W); boxes are [row0, col0, row1, col1) with exclusive ends (`classwise.check_box`).
"""

from __future__ import annotations

import functools
from typing import Callable, Sequence

import chex
import jax
import jax.numpy as jnp
import numpy as np

from anatomy_jax.attribution.perturbation import REFERENCE_SIZE, gaussian_blur
from anatomy_jax.classwise.metrics import box_mass, check_box

ApplyFn = Callable[..., jax.Array]
TORCHRAY_TOLERANCE = 15  # px at 224 px


def scaled_tolerance(size: int) -> int:
    """TorchRay's 15 px pointing tolerance at 224 px, scaled: round(15 size / 224)."""
    return round(TORCHRAY_TOLERANCE * size / REFERENCE_SIZE)


def argmax_points(maps: jax.Array) -> jax.Array:
    """(n, 2) (row, col) of each map's maximum (the first in row-major order on ties)."""
    chex.assert_rank(maps, 3)
    flat = jnp.argmax(maps.reshape(maps.shape[0], -1), axis=1)
    return jnp.stack([flat // maps.shape[2], flat % maps.shape[2]], axis=1)


def pointing_game(maps: jax.Array, box: Sequence[int], tolerance: float = 0) -> jax.Array:
    """(n,) bool: a hit when the map's maximum lies within `tolerance` px (Euclidean, pixel
    centres) of the box; tolerance 0: inside it."""
    chex.assert_rank(maps, 3)
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance}")
    r0, c0, r1, c1 = check_box(box, maps.shape[1:])
    pts = argmax_points(maps)
    dr = jnp.maximum(jnp.maximum(r0 - pts[:, 0], pts[:, 0] - (r1 - 1)), 0)
    dc = jnp.maximum(jnp.maximum(c0 - pts[:, 1], pts[:, 1] - (c1 - 1)), 0)
    return dr * dr + dc * dc <= tolerance * tolerance


def mass_in_box(maps: jax.Array, box: Sequence[int]) -> jax.Array:
    """(n,) share of each non-negative map's mass inside the box (`classwise.box_mass`)."""
    if np.any(np.asarray(maps) < 0):
        raise ValueError("mass_in_box needs non-negative maps (take abs or relu first)")
    return box_mass(maps, box)


def _rank_order(maps: jax.Array) -> jax.Array:
    """(n, H W) pixel indices by decreasing saliency (stable: row-major order on ties)."""
    return jnp.argsort(-maps.reshape(maps.shape[0], -1), axis=1, stable=True)


@functools.partial(jax.jit, static_argnums=(0, 6))
def _curve(apply_fn, variables, start, end, targets, maps, steps):
    n, h, w, c = start.shape
    order = _rank_order(maps)
    ranks = jnp.argsort(order, axis=1).reshape(n, h, w, 1)  # rank of every pixel

    def at(k):
        count = jnp.round(k * h * w / steps)
        x = jnp.where(ranks < count, end, start)
        return jnp.take_along_axis(jax.nn.softmax(apply_fn(variables, x), axis=-1), targets[:, None], axis=1)[:, 0]

    return jax.lax.map(at, jnp.arange(steps + 1)).T


def _check_curve(images, targets, maps, steps):
    if images.ndim != 4:
        raise ValueError(f"images must be (n, H, W, C) floats, got shape {images.shape}")
    chex.assert_shape(maps, images.shape[:3])
    chex.assert_shape(targets, (images.shape[0],))
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")


def deletion_curve(apply_fn: ApplyFn, variables, images: jax.Array, targets: jax.Array, maps: jax.Array, *,
                   steps: int = 16, reference: jax.Array | None = None) -> jax.Array:
    """(n, steps + 1) class probability as the most salient pixels are replaced by `reference`
    (default black), round(k H W / steps) of them at step k (Petsiuk et al. 2018). Lower area: better."""
    _check_curve(images, targets, maps, steps)
    ref = jnp.zeros_like(images) if reference is None else jnp.broadcast_to(reference, images.shape)
    return _curve(apply_fn, variables, images, ref, jnp.asarray(targets, jnp.int32), maps, int(steps))


def insertion_curve(apply_fn: ApplyFn, variables, images: jax.Array, targets: jax.Array, maps: jax.Array, *,
                    steps: int = 16, reference: jax.Array | None = None, blur_sigma: float = 1.0) -> jax.Array:
    """(n, steps + 1) class probability as the most salient pixels are put back into `reference`
    (default: the image blurred with `blur_sigma` px). Higher area: better."""
    _check_curve(images, targets, maps, steps)
    ref = gaussian_blur(images, blur_sigma) if reference is None else jnp.broadcast_to(reference, images.shape)
    return _curve(apply_fn, variables, ref, images, jnp.asarray(targets, jnp.int32), maps, int(steps))


def curve_auc(curves: jax.Array) -> jax.Array:
    """(n,) trapezoidal area under curves sampled at fractions 0, 1/steps, ..., 1."""
    y = jnp.asarray(curves)
    return (y[..., 1:] + y[..., :-1]).sum(axis=-1) / (2 * (y.shape[-1] - 1))


def _average_ranks(row: np.ndarray) -> np.ndarray:
    """Ranks 0..n-1 of a 1-d array, ties sharing their mean rank."""
    order = np.argsort(row, kind="stable")
    r = np.empty(len(row))
    r[order] = np.arange(len(row))
    _, inverse = np.unique(row, return_inverse=True)
    return (np.bincount(inverse, r) / np.bincount(inverse))[inverse]


def rank_correlation(a: jax.Array | np.ndarray, b: jax.Array | np.ndarray,
                     where: jax.Array | np.ndarray | None = None) -> np.ndarray:
    """(n,) Spearman correlation between map a_i and map b_i over pixels (average ranks on ties;
    NaN where a map is constant over the pixels counted). `where` (n, H, W) bool: count only these
    pixels, e.g. `(a != 0) | (b != 0)`, so that a shared background of tied zeros (integrated
    gradients on black MNIST borders) does not inflate the correlation."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape or a.ndim != 3:
        raise ValueError(f"need two (n, H, W) stacks of the same shape, got {a.shape} and {b.shape}")
    keep = np.ones(a.shape, bool) if where is None else np.asarray(where, bool)
    if keep.shape != a.shape:
        raise ValueError(f"where must have the maps' shape {a.shape}, got {keep.shape}")
    out = np.full(len(a), np.nan)
    # host-side statistics after the maps: each image keeps its own number of pixels
    for i, (x, y, k) in enumerate(zip(a.reshape(len(a), -1), b.reshape(len(b), -1), keep.reshape(len(a), -1))):
        if k.sum() < 2:
            continue
        rx, ry = _average_ranks(x[k]), _average_ranks(y[k])
        rx, ry = rx - rx.mean(), ry - ry.mean()
        with np.errstate(invalid="ignore", divide="ignore"):
            out[i] = (rx * ry).sum() / np.sqrt((rx * rx).sum() * (ry * ry).sum())
    return out
