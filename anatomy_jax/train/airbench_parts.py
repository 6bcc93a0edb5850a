"""airbench94's training ingredients as pure functions on pytrees (jittable, vmappable over runs).

- Lookahead (airbench's `LookaheadState`): every `period` steps the slow copy moves towards the
  trained weights, slow <- decay * slow + (1 - decay) * fast, and the trained weights are reset to it.
  airbench schedules the decay (`lookahead_decay`: 0.95^5 (t / T)^3) and applies it to every float
  tensor of the state dict, batch-norm running statistics included: `lookahead_step` takes any pytree
  (e.g. {"params": ..., "batch_stats": ...}). With a constant decay it is `optax.lookahead` with
  `sync_period=period, slow_step_size=1 - decay` (which the tests check); optax's wrapper is not used
  because it keeps a constant step size and only covers the parameters the optimizer updates.
- EMA of weights: `ema_update`, optax's `incremental_update` under airbench's decay convention.
- Alternating flip: each image's flip is random in epoch 0 and alternates from then on.
- Test-time augmentation: the mean of logits over the mirror image (level 1) and one-pixel
  translations (level 2), as airbench's `infer`.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

PyTree = Any


# ---- Lookahead and EMA -------------------------------------------------------------------------


def ema_update(average: PyTree, tree: PyTree, decay) -> PyTree:
    """decay * average + (1 - decay) * tree, leaf by leaf (integer leaves are left as they are)."""
    return jax.tree.map(
        lambda a, t: optax.incremental_update(t, a, 1.0 - decay) if jnp.issubdtype(jnp.result_type(a), jnp.inexact)
        else a, average, tree)


class LookaheadState(NamedTuple):
    """The slow copy of the weights."""

    slow: PyTree


def lookahead_init(tree: PyTree) -> LookaheadState:
    return LookaheadState(slow=jax.tree.map(jnp.asarray, tree))


def lookahead_decay(step, total_steps: int, base: float = 0.95 ** 5, power: float = 3.0):
    """airbench's decay schedule: base * (step / total_steps)^power (0 early: the slow copy jumps to
    the trained weights; 0.95^5 at the end)."""
    return base * (jnp.asarray(step, jnp.float32) / total_steps) ** power


def lookahead_step(state: LookaheadState, tree: PyTree, step, decay, period: int = 5
                   ) -> tuple[PyTree, LookaheadState]:
    """Call after training step `step` (counted from 1). When `step % period == 0`:
    slow <- decay * slow + (1 - decay) * tree, and the returned tree is the new slow copy; otherwise
    both pass through unchanged. `decay` may be a number or a function of `step`. Jittable (`step`
    may be traced). Returns (tree, state)."""
    if period < 1:
        raise ValueError(f"period must be >= 1, got {period}")
    d = decay(step) if callable(decay) else decay
    sync = jnp.asarray(step) % period == 0
    moved = ema_update(state.slow, tree, d)
    slow = jax.tree.map(lambda m, s: jnp.where(sync, m, s), moved, state.slow)
    new_tree = jax.tree.map(lambda s, t: jnp.where(sync, s, t).astype(jnp.result_type(t)), slow, tree)
    return new_tree, LookaheadState(slow)


def lookahead_finish(state: LookaheadState, tree: PyTree) -> PyTree:
    """airbench's last update (decay 1): the trained weights are replaced by the slow copy."""
    return jax.tree.map(lambda s, t: s.astype(jnp.result_type(t)), state.slow, tree)


# ---- alternating flip --------------------------------------------------------------------------


def alternating_flip_mask(key: jax.Array, indices: jax.Array, epoch) -> jax.Array:
    """Whether each image (dataset index `indices[i]`) is mirrored in `epoch` (from 0): a fair coin
    per image in epoch 0 (`bernoulli(fold_in(key, index))`, as `data.random_flip`), negated on every
    odd epoch, so each image is seen mirrored in exactly every other epoch."""
    first = jax.vmap(lambda i: jax.random.bernoulli(jax.random.fold_in(key, i), 0.5))(jnp.asarray(indices))
    return jnp.logical_xor(first, jnp.asarray(epoch) % 2 == 1)


def alternating_flip(key: jax.Array, images: jax.Array, indices: jax.Array, epoch) -> jax.Array:
    """Mirrors (N, H, W, C) `images` left-right where `alternating_flip_mask` says so."""
    flip = alternating_flip_mask(key, indices, epoch)
    return jnp.where(flip[:, None, None, None], images[:, :, ::-1, :], images)


# ---- test-time augmentation --------------------------------------------------------------------


def _mirror_mean(apply_fn, variables, images):
    return 0.5 * apply_fn(variables, images) + 0.5 * apply_fn(variables, images[:, :, ::-1, :])


@functools.partial(jax.jit, static_argnums=0, static_argnames=("level",))
def tta_logits(apply_fn: Callable[[PyTree, jax.Array], jax.Array], variables: PyTree, images: jax.Array,
               level: int = 1) -> jax.Array:
    """airbench's test-time augmentation of `apply_fn(variables, images) -> logits` (N, H, W, C):
    level 0: the logits; 1: their mean with the mirror image's; 2: 0.5 * level 1 + 0.5 * the mean of
    level 1 over the two one-pixel diagonal translations (reflect padding, shifted up-left and
    down-right). `apply_fn` must be hashable (e.g. `model.apply`)."""
    if level not in (0, 1, 2):
        raise ValueError(f"level must be 0, 1 or 2, got {level}")
    if level == 0:
        return apply_fn(variables, images)
    logits = _mirror_mean(apply_fn, variables, images)
    if level == 1:
        return logits
    h, w = images.shape[1:3]
    padded = jnp.pad(images, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="reflect")
    shifted = [padded[:, 0:h, 0:w], padded[:, 2:h + 2, 2:w + 2]]
    translated = sum(_mirror_mean(apply_fn, variables, s) for s in shifted) / 2
    return 0.5 * logits + 0.5 * translated
