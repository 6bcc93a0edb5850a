"""Saliency baselines, batched over images: gradient, gradient x input, integrated gradients,
SmoothGrad, Grad-CAM at a named layer and RISE. Each returns (n, H, W) maps for the class
`targets` (n,) of each image.

apply_fn(variables, x) -> logits for (B, H, W, C) floats in [0, 1]; Grad-CAM also needs the
models' named stages (`capture=True`, `start_after=`, see anatomy_jax/models/base.py). Channels
are reduced by `reduce`: `max_abs` (TorchRay's gradient), `sum_abs` or `sum` (signed).
"""

from __future__ import annotations

import functools
import math
from typing import Callable

import chex
import jax
import jax.numpy as jnp

ApplyFn = Callable[..., jax.Array]
REDUCTIONS = ("max_abs", "sum_abs", "sum")


def reduce_channels(maps: jax.Array, reduce: str) -> jax.Array:
    """(n, H, W, C) -> (n, H, W)."""
    if reduce == "max_abs":
        return jnp.abs(maps).max(axis=-1)
    if reduce == "sum_abs":
        return jnp.abs(maps).sum(axis=-1)
    if reduce == "sum":
        return maps.sum(axis=-1)
    raise ValueError(f"unknown reduce {reduce!r}; choose one of {', '.join(REDUCTIONS)}")


def _check(images: jax.Array, targets: jax.Array, reduce: str | None = None) -> None:
    if images.ndim != 4:
        raise ValueError(f"images must be (n, H, W, C) floats, got shape {images.shape}")
    chex.assert_shape(targets, (images.shape[0],))
    if reduce is not None and reduce not in REDUCTIONS:
        raise ValueError(f"unknown reduce {reduce!r}; choose one of {', '.join(REDUCTIONS)}")


def _target_logit_sum(apply_fn, variables, x, targets):
    """sum_i logit_{targets_i}(x_i): its gradient is every image's own input gradient."""
    logits = apply_fn(variables, x)
    return jnp.take_along_axis(logits, targets[:, None], axis=1).sum()


@functools.partial(jax.jit, static_argnums=0)
def _input_gradients(apply_fn: ApplyFn, variables, images: jax.Array, targets: jax.Array) -> jax.Array:
    """(n, H, W, C) d logit_target / d x of each image."""
    return jax.grad(_target_logit_sum, argnums=2)(apply_fn, variables, images, targets)


def gradient(apply_fn: ApplyFn, variables, images: jax.Array, targets: jax.Array, *,
             reduce: str = "max_abs") -> jax.Array:
    """Gradient saliency (Simonyan et al. 2014): |d logit_t / d x| reduced over channels."""
    _check(images, targets, reduce)
    return reduce_channels(_input_gradients(apply_fn, variables, images, targets), reduce)


def gradient_x_input(apply_fn: ApplyFn, variables, images: jax.Array, targets: jax.Array, *,
                     reduce: str = "sum_abs") -> jax.Array:
    """Gradient x input: x * d logit_t / d x reduced over channels."""
    _check(images, targets, reduce)
    return reduce_channels(images * _input_gradients(apply_fn, variables, images, targets), reduce)


@functools.partial(jax.jit, static_argnums=(0, 5))
def _integrated(apply_fn, variables, images, targets, baselines, steps):
    def body(total, alpha):
        x = baselines + alpha * (images - baselines)
        return total + jax.grad(_target_logit_sum, argnums=2)(apply_fn, variables, x, targets), None

    total, _ = jax.lax.scan(body, jnp.zeros_like(images), jnp.linspace(0.0, 1.0, steps))
    return total * (images - baselines) / steps


def integrated_gradients(apply_fn: ApplyFn, variables, images: jax.Array, targets: jax.Array, *,
                         baselines: jax.Array | None = None, steps: int = 25, reduce: str = "sum",
                         per_channel: bool = False) -> jax.Array:
    """Integrated gradients (Sundararajan et al. 2017) of the target logit from `baselines`
    (default black), with `steps` points alpha = 0, 1/(steps-1), ..., 1 (the convention of the
    `saliency` package): (x - x0) * mean_alpha grad(x0 + alpha (x - x0)). Summed over pixels and
    channels this approximates logit(x) - logit(x0). `per_channel`: the (n, H, W, C) attributions."""
    _check(images, targets, reduce)
    if steps < 2:
        raise ValueError(f"steps must be >= 2, got {steps}")
    baselines = jnp.zeros_like(images) if baselines is None else jnp.broadcast_to(baselines, images.shape)
    out = _integrated(apply_fn, variables, images, jnp.asarray(targets, jnp.int32), baselines, int(steps))
    return out if per_channel else reduce_channels(out, reduce)


@functools.partial(jax.jit, static_argnums=(0, 6))
def _smoothgrad(apply_fn, variables, images, targets, noise, stdev, magnitude):
    def body(total, eps):
        g = jax.grad(_target_logit_sum, argnums=2)(apply_fn, variables, images + stdev * eps, targets)
        return total + (g * g if magnitude else g), None

    total, _ = jax.lax.scan(body, jnp.zeros_like(images), noise)
    return total / noise.shape[0]


def smoothgrad(apply_fn: ApplyFn, variables, images: jax.Array, targets: jax.Array, key: jax.Array, *,
               samples: int = 25, stdev_spread: float = 0.15, magnitude: bool = True, noise: jax.Array | None = None,
               reduce: str = "sum", per_channel: bool = False) -> jax.Array:
    """SmoothGrad (Smilkov et al. 2017): the mean over `samples` noisy copies x + N(0, s^2) of the
    gradient (squared if `magnitude`), s = stdev_spread (max(x) - min(x)) per image (the `saliency`
    package's convention). `noise` (samples, n, H, W, C): pre-drawn standard normals (else from `key`)."""
    _check(images, targets, reduce)
    if noise is None:
        if samples < 1:
            raise ValueError(f"samples must be >= 1, got {samples}")
        noise = jax.random.normal(key, (samples, *images.shape))
    chex.assert_shape(noise, (None, *images.shape))
    spread = images.max(axis=(1, 2, 3), keepdims=True) - images.min(axis=(1, 2, 3), keepdims=True)
    out = _smoothgrad(apply_fn, variables, images, jnp.asarray(targets, jnp.int32), noise, stdev_spread * spread,
                      bool(magnitude))
    return out if per_channel else reduce_channels(out, reduce)


@functools.partial(jax.jit, static_argnums=(0, 4))
def _grad_cam(apply_fn, variables, images, targets, layer):
    _, reps = apply_fn(variables, images, capture=True)
    acts = reps[layer]

    def head(a):
        logits = apply_fn(variables, a, start_after=layer)
        return jnp.take_along_axis(logits, targets[:, None], axis=1).sum()

    grads = jax.grad(head)(acts)
    weights = grads.mean(axis=(1, 2), keepdims=True)
    cam = jax.nn.relu((weights * acts).sum(axis=-1))
    n, h, w = images.shape[:3]
    return jax.image.resize(cam, (n, h, w), "bilinear")


def grad_cam(apply_fn: ApplyFn, variables, images: jax.Array, targets: jax.Array, layer: str) -> jax.Array:
    """Grad-CAM (Selvaraju et al. 2017) at the named stage `layer`: ReLU(sum_k w_k A_k) with w_k the
    spatial mean of d logit_t / d A_k, upsampled bilinearly to the image. `apply_fn` must take
    `capture=True` and `start_after=` (the library's models)."""
    _check(images, targets)
    shapes = jax.eval_shape(lambda v, x: apply_fn(v, x, capture=True)[1], variables, images[:1])
    if layer not in shapes:
        raise ValueError(f"unknown layer {layer!r}; this model has {', '.join(shapes)}")
    if len(shapes[layer].shape) != 4:
        raise ValueError(f"Grad-CAM needs a spatial (n, h, w, c) layer; {layer!r} has shape {shapes[layer].shape}")
    return _grad_cam(apply_fn, variables, images, jnp.asarray(targets, jnp.int32), layer)


def spatial_layers(apply_fn: ApplyFn, variables, image_shape: tuple[int, int, int]) -> list[str]:
    """The names of the model's stages whose output is spatial (h, w, c), in depth order."""
    shapes = jax.eval_shape(lambda v, x: apply_fn(v, x, capture=True)[1], variables,
                            jax.ShapeDtypeStruct((1, *image_shape), jnp.float32))
    return [name for name, s in shapes.items() if len(s.shape) == 4]


def rise_masks(key: jax.Array, num_masks: int, shape: tuple[int, int], grid: int = 7, p: float = 0.5) -> jax.Array:
    """RISE's random masks (num_masks, H, W): a grid x grid Bernoulli(p) pattern upsampled
    bilinearly to (grid + 1) cells of ceil(H / grid) px and cropped at a random shift of < 1 cell."""
    h, w = shape
    ch, cw = math.ceil(h / grid), math.ceil(w / grid)
    k_grid, k_shift = jax.random.split(key)
    cells = jax.random.bernoulli(k_grid, p, (num_masks, grid, grid)).astype(jnp.float32)
    up = jax.image.resize(cells, (num_masks, (grid + 1) * ch, (grid + 1) * cw), "bilinear")
    shifts = jax.random.randint(k_shift, (num_masks, 2), 0, jnp.array([ch, cw]))
    return jax.vmap(lambda m, s: jax.lax.dynamic_slice(m, (s[0], s[1]), (h, w)))(up, shifts)


@functools.partial(jax.jit, static_argnums=(0, 5))
def _rise(apply_fn, variables, images, targets, masks, chunk):
    n, h, w, c = images.shape
    batches = masks.reshape(-1, chunk, h, w)

    def body(total, mb):
        x = images[:, None] * mb[None, :, :, :, None]
        probs = jax.nn.softmax(apply_fn(variables, x.reshape(-1, h, w, c)), axis=-1).reshape(n, chunk, -1)
        p_t = jnp.take_along_axis(probs, targets[:, None, None], axis=2)[..., 0]
        return total + jnp.einsum("nb,bhw->nhw", p_t, mb), None

    total, _ = jax.lax.scan(body, jnp.zeros((n, h, w)), batches)
    return total


def rise(apply_fn: ApplyFn, variables, images: jax.Array, targets: jax.Array, key: jax.Array, *,
         num_masks: int = 4000, grid: int = 7, p: float = 0.5, chunk: int = 250) -> jax.Array:
    """RISE (Petsiuk et al. 2018): sum_i p_t(x * M_i) M_i / (N p) over N random masks shared by the
    images, evaluated `chunk` masks at a time."""
    _check(images, targets)
    if num_masks < 1 or num_masks % chunk:
        raise ValueError(f"num_masks must be a positive multiple of chunk ({chunk}), got {num_masks}")
    if not 0 < p < 1 or grid < 1:
        raise ValueError(f"need 0 < p < 1 and grid >= 1, got p {p}, grid {grid}")
    masks = rise_masks(key, num_masks, images.shape[1:3], grid, p)
    return _rise(apply_fn, variables, images, jnp.asarray(targets, jnp.int32), masks, int(chunk)) / (num_masks * p)
