"""Meaningful perturbations (Fong and Vedaldi, ICCV 2017), batched over images.

The perturbation Phi(x; m) = m x + (1 - m) r blends the image with a reference r (a blurred copy,
a constant, or noise); m in [0, 1], 1 keeps the pixel. The deletion game minimises
    l1 mean|1 - m| + tv TV_beta(m) + p_c(Phi(tau(x); m))
(the smallest deletion that removes the class), the preservation game
    l1 mean|m| + tv TV_beta(m) - p_c(Phi(tau(x); m))
with p_c the softmax probability of the class and tau a random shift (jitter; edges repeated, not
wrapped around, `shift_edge`). The mask is a
low-resolution parameter (1 / `mask_scale` of the image) upsampled bilinearly and blurred; Adam
(lr 0.1) for 300 iterations, the parameter clipped to [0, 1] after each step, initialised to 0.5
(the PyTorch port of the authors' code, pytorch-explain-black-box: mean-normalised l1 0.01, tv 0.2,
beta 3).
Sizes are TorchRay/caffe's for 224 px scaled by H / 224 (`meaningful_defaults`).
"""

from __future__ import annotations

import functools
import math
from typing import Callable, NamedTuple

import chex
import jax
import jax.numpy as jnp
import optax

from anatomy_jax.attribution.perturbation import MIN_BLUR, REFERENCE_SIZE, gaussian_blur, shift_edge, tv_norm

ApplyFn = Callable[..., jax.Array]
GAMES = ("delete", "preserve")
REFERENCES = ("blur", "constant", "noise")


class MeaningfulPerturbation(NamedTuple):
    """masks (n, H, W): the learned m (1 = kept; the deletion game's salient region is where m is
    low, see `saliency`); scores (n,): the class probability of the perturbed image."""

    masks: jax.Array
    scores: jax.Array
    game: str

    @property
    def saliency(self) -> jax.Array:
        """(n, H, W): 1 - m for the deletion game (the deleted region), m for the preservation game."""
        return 1.0 - self.masks if self.game == "delete" else self.masks


def meaningful_defaults(size: int) -> dict[str, float | int]:
    """The 224 px settings scaled to a `size` px image, s = size / 224: `mask_scale` = max(1,
    round(8 s)) (224: a 28x28 mask), `mask_blur` = 5 s, `blur_sigma` (the blurred reference) =
    max(10 s, MIN_BLUR), `jitter` = round(4 s) px: 0 (off) on images of 28 px or less, where one
    pixel is more than TorchRay's 4 px at 224 (a 1 px jitter on 8x8 digits dropped the pointing game
    from 1.0 to 0.84, measured when the shift still wrapped around); pass `jitter=` to force it."""
    s = size / REFERENCE_SIZE
    return {"mask_scale": max(1, round(8 * s)), "mask_blur": 5 * s, "blur_sigma": max(10 * s, MIN_BLUR),
            "jitter": round(4 * s)}


def perturbation_reference(images: jax.Array, kind: str, key: jax.Array, blur_sigma: float) -> jax.Array:
    """(n, H, W, C) references: the blurred image, its per-channel mean (constant), or uniform noise."""
    if kind == "blur":
        return gaussian_blur(images, blur_sigma)
    if kind == "constant":
        return jnp.broadcast_to(images.mean(axis=(1, 2), keepdims=True), images.shape)
    if kind == "noise":
        return jax.random.uniform(key, images.shape)
    raise ValueError(f"unknown reference {kind!r}; choose one of {', '.join(REFERENCES)}")


def normalised_blur(mask: jax.Array, sigma: float) -> jax.Array:
    """(H, W) Gaussian blur of a mask divided by the blur of ones: zero padding alone would darken
    the border (a mask of ones would blur to ~0.7 in the corners at 28 px), biasing the deletion
    game's saliency 1 - m towards the corners; normalised, a constant mask stays constant."""
    ones = gaussian_blur(jnp.ones((*mask.shape, 1)), sigma)[..., 0]
    return gaussian_blur(mask[..., None], sigma)[..., 0] / ones


@functools.partial(jax.jit, static_argnames=("apply_fn", "game", "iters", "mask_shape", "mask_blur", "jitter"))
def _meaningful(apply_fn, variables, images, references, targets, keys, l1, tv, tv_beta, learning_rate, init, *,
                game, iters, mask_shape, mask_blur, jitter):
    h, w, _ = images.shape[1:]
    optimiser = optax.adam(learning_rate, b1=0.9, b2=0.999, eps=1e-8)

    def upsample(p):
        m = jax.image.resize(p, (h, w), "bilinear")
        return normalised_blur(m, mask_blur) if mask_blur > 0 else m

    def prob(x, target):
        return jax.nn.softmax(apply_fn(variables, x[None])[0])[target]

    def one(x, ref, target, key):
        def loss(p, t):
            m = upsample(p)
            phi = m[..., None] * x + (1.0 - m[..., None]) * ref
            if jitter:
                shift = jax.random.randint(jax.random.fold_in(key, t), (2,), -jitter, jitter + 1)
                phi = shift_edge(phi, shift, jitter)
            area = jnp.mean(jnp.abs(1.0 - m)) if game == "delete" else jnp.mean(jnp.abs(m))
            sign = 1.0 if game == "delete" else -1.0
            return l1 * area + tv * tv_norm(m, tv_beta) + sign * prob(phi, target)

        def body(carry, t):
            p, state = carry
            g = jax.grad(loss)(p, t)
            updates, state = optimiser.update(g, state, p)
            return (jnp.clip(optax.apply_updates(p, updates), 0.0, 1.0), state), None

        p0 = jnp.full(mask_shape, init, jnp.float32)
        (p, _), _ = jax.lax.scan(body, (p0, optimiser.init(p0)), jnp.arange(iters))
        m = upsample(p)
        return m, prob(m[..., None] * x + (1.0 - m[..., None]) * ref, target)

    return jax.vmap(one)(images, references, targets, keys)


def meaningful_perturbation(apply_fn: ApplyFn, variables, images: jax.Array, targets: jax.Array, key: jax.Array, *,
                            game: str = "delete", reference: str = "blur", iters: int = 300,
                            learning_rate: float = 0.1, l1: float = 0.01, tv: float = 0.2, tv_beta: float = 3.0,
                            init: float = 0.5, mask_scale: int | None = None, mask_blur: float | None = None,
                            blur_sigma: float | None = None, jitter: int | None = None) -> MeaningfulPerturbation:
    """The meaningful-perturbation mask of every image (n, H, W) for its class `targets` (n,).

    apply_fn(variables, x) -> logits for (B, H, W, C) floats in [0, 1]. None sizes follow
    `meaningful_defaults` for the image size. `key` drives the jitter and the noise reference.
    """
    if images.ndim != 4:
        raise ValueError(f"images must be (n, H, W, C) floats in [0, 1], got shape {images.shape}")
    chex.assert_shape(targets, (images.shape[0],))
    if game not in GAMES:
        raise ValueError(f"unknown game {game!r}; choose one of {', '.join(GAMES)}")
    if reference not in REFERENCES:
        raise ValueError(f"unknown reference {reference!r}; choose one of {', '.join(REFERENCES)}")
    if iters < 1 or not 0.0 <= init <= 1.0:
        raise ValueError(f"iters must be >= 1 and init in [0, 1], got {iters}, {init}")
    h, w = images.shape[1:3]
    d = meaningful_defaults(min(h, w))
    mask_scale = int(d["mask_scale"] if mask_scale is None else mask_scale)
    if mask_scale < 1:
        raise ValueError(f"mask_scale must be >= 1, got {mask_scale}")
    mask_blur = float(d["mask_blur"] if mask_blur is None else mask_blur)
    blur_sigma = float(d["blur_sigma"] if blur_sigma is None else blur_sigma)
    jitter = int(d["jitter"] if jitter is None else jitter)
    if jitter < 0:
        raise ValueError(f"jitter must be >= 0 px, got {jitter}")
    ref_key, key = jax.random.split(key)
    references = perturbation_reference(images, reference, ref_key, blur_sigma)
    masks, scores = _meaningful(apply_fn, variables, images, references, jnp.asarray(targets, jnp.int32),
                                jax.random.split(key, images.shape[0]), jnp.float32(l1), jnp.float32(tv),
                                jnp.float32(tv_beta), jnp.float32(learning_rate), jnp.float32(init), game=game,
                                iters=int(iters), mask_shape=(math.ceil(h / mask_scale), math.ceil(w / mask_scale)),
                                mask_blur=mask_blur, jitter=jitter)
    chex.assert_shape(masks, (images.shape[0], h, w))
    return MeaningfulPerturbation(masks, scores, game)
