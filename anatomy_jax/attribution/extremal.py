"""Extremal perturbations (Fong, Patrick and Vedaldi, ICCV 2019), for a batch of images and several
areas in one compiled program.

For an image x, a class c and an area a, the extremal mask is the smooth mask m with a share a of
the image that maximises the class score of the perturbed image Phi(x; m) (`preserve`: keep the
masked region, blur the rest; `delete`: blur the masked region; `dual`: the preserve score minus
the delete score). The area constraint is TorchRay's ranking regulariser -lambda mean((sort(m) -
r_a)^2), lambda_t = `regul_weight` * `regul_growth`^t at iteration t (`regul_weights`), and
the optimiser TorchRay's SGD (lr 0.01, momentum 0.9, dampening 0.9; parameters clamped to [0, 1]
after each step, initialised to 1).

The optimisation of one (image, area) pair is a `lax.scan` over iterations; it is vmapped over the
areas and then over the images, so the pairs are independent: running the areas together gives the
masks of running them one by one (the jitter and the ranking's tie order depend on the image and
the iteration, not the area).

One deliberate difference from TorchRay: the ranking regulariser acts on the mask over the image,
not on the mask with its margin of sigma px (TorchRay's choice makes the mask inside the image
larger than a; here mean(mask) ~ a).
"""

from __future__ import annotations

import functools
from typing import Callable, NamedTuple, Sequence

import chex
import jax
import jax.numpy as jnp
import numpy as np

from anatomy_jax.attribution.perturbation import (PERTURBATIONS, apply_pyramid, area_rank_loss, blur_pyramid,
                                                  scaled_defaults, shift_edge, smooth_mask_generator)

ApplyFn = Callable[..., jax.Array]
VARIANTS = ("preserve", "delete", "dual")
REWARDS = ("simple", "contrastive")
JITTERS = ("flip", "shift", "none")
TIE_BREAKS = ("random", "index")


class ExtremalPerturbation(NamedTuple):
    """masks (n, A, H, W) in [0, 1]; scores (n, A): the reward (target logit, or contrastive margin)
    of the image perturbed with the final mask (preserved region for `preserve` and `dual`, deleted
    region for `delete`)."""

    masks: jax.Array
    scores: jax.Array


def class_score(logits: jax.Array, target: jax.Array, reward: str) -> jax.Array:
    """The target's logit (`simple`) or its margin over the best other class (`contrastive`)."""
    own = logits[..., target]
    if reward == "simple":
        return own
    others = jnp.where(jnp.arange(logits.shape[-1]) == target, -jnp.inf, logits)
    return own - others.max(axis=-1)


def _jitter(x: jax.Array, kind: str, key: jax.Array, step: jax.Array, max_shift: int) -> jax.Array:
    """TorchRay's horizontal flip on even iterations (`flip`), a random shift of up to `max_shift`
    px that repeats the edge instead of wrapping around (`shift`, `shift_edge`), or nothing."""
    if kind == "flip":
        return jnp.where(step % 2 == 0, x[..., :, ::-1, :], x)
    if kind == "shift":
        shift = jax.random.randint(jax.random.fold_in(key, step), (2,), -max_shift, max_shift + 1)
        return shift_edge(x, shift, max_shift)
    return x


def default_regul_growth(max_iter: int) -> float:
    """1.0035^(800 / max_iter): the regulariser's weight then grows by TorchRay's 1.0035^800 over
    the run whatever its length."""
    if max_iter < 1:
        raise ValueError(f"max_iter must be >= 1, got {max_iter}")
    return 1.0035 ** (800 / max_iter)


def regul_weights(regul_weight: jax.Array | float, regul_growth: jax.Array | float, max_iter: int) -> jax.Array:
    """(max_iter,) the ranking regulariser's weight at each iteration t: regul_weight * regul_growth^t
    (TorchRay multiplies it by the growth after every step)."""
    return regul_weight * jnp.asarray(regul_growth, jnp.float32) ** jnp.arange(max_iter, dtype=jnp.float32)


def _check_inputs(images: jax.Array, targets: jax.Array) -> None:
    if images.ndim != 4:
        raise ValueError(f"images must be (n, H, W, C) floats in [0, 1], got shape {images.shape}")
    chex.assert_shape(targets, (images.shape[0],))


@functools.partial(jax.jit, static_argnames=("apply_fn", "variant", "reward", "perturbation", "max_iter", "step",
                                             "sigma", "num_levels", "max_blur", "jitter", "max_shift",
                                             "coldness", "tie_break"))
def _extremal(apply_fn, variables, images, targets, areas, keys, regul_weight, regul_growth, learning_rate,
              momentum, *, variant, reward, perturbation, max_iter, step, sigma, num_levels, max_blur, jitter,
              max_shift, coldness, tie_break):
    generator = smooth_mask_generator(images.shape[1:3], step, sigma, coldness)

    def score(x, target):
        return class_score(apply_fn(variables, x[None])[0], target, reward)

    def one(x, target, area, image_key):
        pyramid = blur_pyramid(x, num_levels, max_blur, perturbation)
        key, tie_key = jax.random.split(image_key)  # per image, shared by the areas
        priority = jax.random.permutation(tie_key, x.shape[0] * x.shape[1]) if tie_break == "random" else None

        def reward_of(mask, t):
            if variant == "preserve":
                return score(_jitter(apply_pyramid(pyramid, mask), jitter, key, t, max_shift), target)
            deleted = score(_jitter(apply_pyramid(pyramid, 1.0 - mask), jitter, key, t, max_shift), target)
            if variant == "delete":
                return -deleted
            return score(_jitter(apply_pyramid(pyramid, mask), jitter, key, t, max_shift), target) - deleted

        def energy(params, t, weight):
            mask = generator(params)
            return reward_of(mask, t) - weight * area_rank_loss(mask, area, priority)

        def body(carry, step_weight):
            params, buf = carry
            t, weight = step_weight
            g = -jax.grad(energy)(params, t, weight)
            buf = jnp.where(t == 0, g, momentum * buf + (1.0 - momentum) * g)  # torch SGD, dampening = momentum
            params = jnp.clip(params - learning_rate * buf, 0.0, 1.0)
            return (params, buf), None

        p0 = jnp.ones(generator.param_shape, jnp.float32)
        schedule = (jnp.arange(max_iter), regul_weights(regul_weight, regul_growth, max_iter))
        (params, _), _ = jax.lax.scan(body, (p0, jnp.zeros_like(p0)), schedule)
        mask = generator(params)
        kept = mask if variant != "delete" else 1.0 - mask
        return mask, score(apply_pyramid(pyramid, kept), target)

    per_area = jax.vmap(one, in_axes=(None, None, 0, None))
    return jax.vmap(per_area, in_axes=(0, 0, None, 0))(images, targets, areas, keys)


def extremal_perturbation(apply_fn: ApplyFn, variables, images: jax.Array, targets: jax.Array,
                          areas: Sequence[float], key: jax.Array, *, variant: str = "preserve",
                          reward: str = "simple", perturbation: str = "blur", max_iter: int = 800,
                          learning_rate: float = 0.01, momentum: float = 0.9, regul_weight: float = 300.0,
                          regul_growth: float | None = None, step: int | None = None, sigma: float | None = None,
                          num_levels: int = 8, max_blur: float | None = None, jitter: str = "flip",
                          max_shift: int = 1, coldness: float = 20.0,
                          tie_break: str = "random") -> ExtremalPerturbation:
    """Extremal masks of every image for every area: masks (n, len(areas), H, W) and scores (n, A).

    apply_fn(variables, x) -> logits for (B, H, W, C) floats in [0, 1] (batch-norm models in eval
    mode); targets (n,) int: the class explained per image. TorchRay's defaults, with `step`,
    `sigma` and `max_blur` (None) scaled to the image size by `scaled_defaults` and `regul_growth`
    (None) = 1.0035^(800 / max_iter), so the regulariser ends as strong as after TorchRay's 800
    iterations whatever `max_iter`. `jitter`: `flip` (TorchRay: horizontal flip on even
    iterations; only for flip-invariant models), `shift` (a random shift of up to `max_shift` px,
    edges repeated, never wrapped) or `none`. The regulariser's weight at iteration t is
    `regul_weights(regul_weight, growth, max_iter)[t]`. `tie_break`: how the ranking regulariser
    orders mask values within TIE_TOLERANCE, `random` (a random pixel order per image, from `key`)
    or `index` (exact ties only, row-major: where the reward is weak the masks drift to the
    bottom-right corner; on 8x8 digits the natural model's and a re-initialised model's masks hit a
    bottom-right trigger box on 0.91 and 1.0 of the images, against 0.33 and 0.36 with `random`).
    `key` drives the shift jitter and the tie order.
    """
    _check_inputs(images, targets)
    areas_arr = np.asarray(areas, np.float32).reshape(-1)
    if areas_arr.size == 0 or not np.all((areas_arr > 0) & (areas_arr < 1)):
        raise ValueError(f"areas must be a non-empty list of values in (0, 1), got {list(areas)}")
    for name, value, allowed in (("variant", variant, VARIANTS), ("reward", reward, REWARDS),
                                 ("perturbation", perturbation, PERTURBATIONS), ("jitter", jitter, JITTERS),
                                 ("tie_break", tie_break, TIE_BREAKS)):
        if value not in allowed:
            raise ValueError(f"unknown {name} {value!r}; choose one of {', '.join(allowed)}")
    if max_iter < 1 or num_levels < 2 or max_shift < 0:
        raise ValueError(f"max_iter must be >= 1, num_levels >= 2 and max_shift >= 0, got {max_iter}, {num_levels}, "
                         f"{max_shift}")
    defaults = scaled_defaults(min(images.shape[1:3]))
    step = int(defaults["step"] if step is None else step)
    sigma = float(defaults["sigma"] if sigma is None else sigma)
    max_blur = float(defaults["max_blur"] if max_blur is None else max_blur)
    growth = default_regul_growth(max_iter) if regul_growth is None else regul_growth
    keys = jax.random.split(key, images.shape[0])
    masks, scores = _extremal(apply_fn, variables, images, jnp.asarray(targets, jnp.int32), jnp.asarray(areas_arr),
                              keys, jnp.float32(regul_weight), jnp.float32(growth), jnp.float32(learning_rate),
                              jnp.float32(momentum), variant=variant, reward=reward, perturbation=perturbation,
                              max_iter=int(max_iter), step=step, sigma=sigma, num_levels=int(num_levels),
                              max_blur=max_blur, jitter=jitter, max_shift=int(max_shift), coldness=float(coldness),
                              tie_break=tie_break)
    chex.assert_shape(masks, (images.shape[0], areas_arr.size, *images.shape[1:3]))
    return ExtremalPerturbation(masks, scores)
