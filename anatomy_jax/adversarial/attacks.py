"""Adversarial examples: FGSM and PGD under L-infinity and L2 constraints, batched over a dataset.

Images are floats in [0, 1] and eps, step sizes are on that scale. Every attack is a pure function
of (params, x, y, key): `apply_fn(params, x) -> logits` is the model, so the same code attacks any
registry model (e.g. `lambda p, x: model.apply(p, x)` with p the variables dict). The functions
are traceable; `make_attack` returns a jitted version for one configuration.

* FGSM (Goodfellow et al. 2015): one step of size eps along sign(grad) (L-inf) or grad / ||grad||_2 (L2).
* PGD (Madry et al. 2018): `steps` steps of `step_size` along the same directions, each followed by
  a projection onto the eps-ball around x and onto [0, 1]; optionally from a uniform random start
  inside the ball. Maximises the cross entropy of the true label (untargeted), or with `target`
  minimises the cross entropy of the target label (targeted: success is prediction == target).
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax

NORMS = ("linf", "l2")
ApplyFn = Callable[[Any, jax.Array], jax.Array]


def _loss(apply_fn: ApplyFn, params, x, y) -> jax.Array:
    return optax.softmax_cross_entropy_with_integer_labels(apply_fn(params, x), y).sum()


def _per_example_norm(v: jax.Array) -> jax.Array:
    return jnp.sqrt(jnp.sum(v.reshape(v.shape[0], -1) ** 2, axis=1)).reshape((-1,) + (1,) * (v.ndim - 1))


def _direction(grad: jax.Array, norm: str) -> jax.Array:
    if norm == "linf":
        return jnp.sign(grad)
    return grad / jnp.maximum(_per_example_norm(grad), 1e-12)


def _project(x_adv: jax.Array, x: jax.Array, eps: float, norm: str) -> jax.Array:
    delta = x_adv - x
    if norm == "linf":
        delta = jnp.clip(delta, -eps, eps)
    else:
        delta = delta * jnp.minimum(1.0, eps / jnp.maximum(_per_example_norm(delta), 1e-12))
    return jnp.clip(x + delta, 0.0, 1.0)


def _check(x, y, eps, norm):
    chex.assert_rank(x, 4)
    chex.assert_shape(y, (x.shape[0],))
    if norm not in NORMS:
        raise ValueError(f"unknown norm {norm!r}; choose one of {', '.join(NORMS)}")
    if not eps >= 0:
        raise ValueError(f"eps must be >= 0, got {eps}")


def fgsm(apply_fn: ApplyFn, params: Any, x: jax.Array, y: jax.Array, *, eps: float, norm: str = "linf") -> jax.Array:
    """One gradient step of size eps that raises the loss of label y, kept in [0, 1]."""
    _check(x, y, eps, norm)
    grad = jax.grad(lambda x: _loss(apply_fn, params, x, y))(x)
    return _project(x + eps * _direction(grad, norm), x, eps, norm)


def _start_noise(key: jax.Array, x: jax.Array, eps: float, norm: str) -> jax.Array:
    """A uniform random point of the eps-ball around 0, shaped like x."""
    if norm == "linf":
        return jax.random.uniform(key, x.shape, minval=-eps, maxval=eps)
    # uniform in the L2 ball: a random direction times radius eps * u^(1/d)
    k1, k2 = jax.random.split(key)
    direction = jax.random.normal(k1, x.shape)
    direction = direction / _per_example_norm(direction)
    d = np.prod(x.shape[1:])
    radius = eps * jax.random.uniform(k2, (x.shape[0],) + (1,) * (x.ndim - 1)) ** (1.0 / d)
    return direction * radius


def pgd(apply_fn: ApplyFn, params: Any, x: jax.Array, y: jax.Array, key: jax.Array | None = None, *, eps: float,
        step_size: float, steps: int, norm: str = "linf", random_start: bool = True,
        indices: jax.Array | None = None, target: jax.Array | None = None) -> jax.Array:
    """Projected gradient ascent on the cross entropy of y inside the eps-ball (and [0, 1]).

    With `target` (one class per example) the attack is targeted: projected gradient descent on
    the cross entropy of the target class, pulling the prediction towards it (y is then only
    shape-checked). With `indices`, example i's random start comes from `fold_in(key, indices[i])`,
    so a batch split over data-parallel devices starts where it would on one device."""
    _check(x, y, eps, norm)
    if target is not None:
        chex.assert_shape(target, y.shape)
    if steps < 1 or not step_size > 0:
        raise ValueError(f"need steps >= 1 and step_size > 0, got {steps} and {step_size}")
    x_adv = x
    if random_start:
        if key is None:
            raise ValueError("random_start needs a key")
        if indices is None:
            noise = _start_noise(key, x, eps, norm)
        else:
            noise = jax.vmap(lambda i, xi: _start_noise(jax.random.fold_in(key, i), xi[None], eps, norm)[0])(
                indices, x)
        x_adv = _project(x + noise, x, eps, norm)

    def step(_, x_adv):
        if target is not None:  # descend the target's loss
            grad = jax.grad(lambda z: _loss(apply_fn, params, z, target))(x_adv)
            return _project(x_adv - step_size * _direction(grad, norm), x, eps, norm)
        grad = jax.grad(lambda z: _loss(apply_fn, params, z, y))(x_adv)
        return _project(x_adv + step_size * _direction(grad, norm), x, eps, norm)

    return jax.lax.fori_loop(0, steps, step, x_adv)


def attack_success(apply_fn: ApplyFn, params: Any, x_adv: jax.Array, y: jax.Array,
                   target: jax.Array | None = None) -> jax.Array:
    """(n,) bool: the prediction on x_adv differs from y (untargeted) or equals `target` (targeted)."""
    chex.assert_shape(y, (x_adv.shape[0],))
    pred = jnp.argmax(apply_fn(params, x_adv), axis=-1)
    if target is None:
        return pred != y
    chex.assert_shape(target, y.shape)
    return pred == target


def make_attack(apply_fn: ApplyFn, *, eps: float, norm: str = "linf", steps: int = 0, step_size: float | None = None,
                random_start: bool = True) -> Callable[[Any, jax.Array, jax.Array, jax.Array], jax.Array]:
    """A jitted attack(params, x, y, key): FGSM when `steps` is 0, else PGD (step size default
    2.5 eps / steps, as in Madry et al.; the PGD one also takes `target=` for a targeted attack)."""
    if steps == 0:
        return jax.jit(lambda params, x, y, key: fgsm(apply_fn, params, x, y, eps=eps, norm=norm))
    size = step_size if step_size is not None else 2.5 * eps / steps
    return jax.jit(functools.partial(pgd, apply_fn, eps=eps, step_size=size, steps=steps, norm=norm,
                                     random_start=random_start))


def attack_dataset(attack: Callable, params: Any, images: jax.Array, labels: jax.Array, key: jax.Array,
                   batch_size: int = 500, targets: jax.Array | None = None) -> np.ndarray:
    """Adversarial examples of a whole (float) dataset, batch by batch (key folded with the batch
    index); with `targets` (one class per image) a targeted PGD from `make_attack`."""
    out = []
    for i, start in enumerate(range(0, len(labels), batch_size)):
        x = jnp.asarray(images[start:start + batch_size])
        y = jnp.asarray(labels[start:start + batch_size])
        extra = {} if targets is None else {"target": jnp.asarray(targets[start:start + batch_size])}
        out.append(np.asarray(attack(params, x, y, jax.random.fold_in(key, i), **extra)))
    return np.concatenate(out)
