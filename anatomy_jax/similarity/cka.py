"""Centered kernel alignment (CKA) between two representations of the same n examples.

    CKA(K, L) = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L))

with K, L the n x n Gram matrices of x (n x p) and y (n x q) (Kornblith et al., "Similarity of
neural network representations revisited", ICML 2019).

* biased HSIC (the paper's default): tr(K H L H) / (n - 1)^2, H = I - 11^T / n. For linear kernels it
  is computed from the p x q cross-covariance, ||x_c^T y_c||_F^2, without an n x n matrix.
* debiased HSIC (Song et al. 2012, "Feature selection via dependence maximization", eq. 5): the
  unbiased U-statistic on Gram matrices with zeroed diagonals; its CKA is not biased upwards when
  p, q are large relative to n.
* minibatch CKA (Nguyen et al., "Do wide and deep networks learn the same things?", ICLR 2021):
  unbiased HSIC averaged over minibatches, then the ratio; for n too large for n x n Gram matrices.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp


def _check(x: jax.Array, y: jax.Array) -> tuple[jax.Array, jax.Array]:
    x, y = jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32)
    chex.assert_rank([x, y], 2)
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x and y must share the example axis, got {x.shape[0]} and {y.shape[0]} examples")
    if x.shape[0] < 4:
        raise ValueError(f"need at least 4 examples, got {x.shape[0]}")
    return x, y


def _center_gram(k: jax.Array) -> jax.Array:
    return k - k.mean(axis=0, keepdims=True) - k.mean(axis=1, keepdims=True) + k.mean()


def hsic_unbiased(k: jax.Array, l: jax.Array) -> jax.Array:
    """The unbiased HSIC estimator of Song et al. (2012) from two n x n Gram matrices."""
    n = k.shape[0]
    k = k * (1.0 - jnp.eye(n, dtype=k.dtype))
    l = l * (1.0 - jnp.eye(n, dtype=l.dtype))
    kl = k @ l
    return (jnp.trace(kl) + k.sum() * l.sum() / ((n - 1) * (n - 2)) - 2.0 * kl.sum() / (n - 2)) / (n * (n - 3))


def _hsic_biased(k: jax.Array, l: jax.Array) -> jax.Array:
    return jnp.sum(_center_gram(k) * _center_gram(l)) / (k.shape[0] - 1) ** 2


def _cka_from_grams(k: jax.Array, l: jax.Array, debiased: bool) -> jax.Array:
    hsic = hsic_unbiased if debiased else _hsic_biased
    return hsic(k, l) / jnp.sqrt(hsic(k, k) * hsic(l, l))


@jax.jit
def _linear_cka_biased(x: jax.Array, y: jax.Array) -> jax.Array:
    x = x - x.mean(axis=0)
    y = y - y.mean(axis=0)
    cross = jnp.sum((x.T @ y) ** 2)
    return cross / jnp.sqrt(jnp.sum((x.T @ x) ** 2) * jnp.sum((y.T @ y) ** 2))


def linear_cka(x: jax.Array, y: jax.Array, debiased: bool = False) -> jax.Array:
    """Linear CKA of x (n x p) and y (n x q): 1 for identical representations, invariant to
    orthogonal transforms and isotropic scaling, not to general invertible linear maps.

    Biased HSIC by default, computed from feature-space products (no n x n matrix); `debiased=True`
    uses the unbiased HSIC on the n x n linear Gram matrices.
    """
    x, y = _check(x, y)
    if not debiased:
        return _linear_cka_biased(x, y)
    return jax.jit(_cka_from_grams, static_argnums=2)(x @ x.T, y @ y.T, True)


def _rbf_gram(x: jax.Array, sigma_fraction: float) -> jax.Array:
    sq = jnp.sum(x ** 2, axis=1)
    d2 = jnp.maximum(sq[:, None] + sq[None, :] - 2.0 * x @ x.T, 0.0)
    median = jnp.median(jnp.sqrt(d2)[jnp.triu_indices(x.shape[0], 1)])
    sigma = sigma_fraction * median
    return jnp.exp(-d2 / (2.0 * sigma ** 2))


def rbf_cka(x: jax.Array, y: jax.Array, sigma_fraction: float = 0.8, debiased: bool = False) -> jax.Array:
    """CKA with RBF kernels exp(-||a - b||^2 / (2 sigma^2)), sigma = `sigma_fraction` x the median
    pairwise distance of each representation (Kornblith et al. use 0.2-0.8). Forms n x n matrices."""
    if not sigma_fraction > 0:
        raise ValueError(f"sigma_fraction must be > 0, got {sigma_fraction}")
    x, y = _check(x, y)
    fn = jax.jit(lambda x, y: _cka_from_grams(_rbf_gram(x, sigma_fraction), _rbf_gram(y, sigma_fraction), debiased))
    return fn(x, y)


def minibatch_linear_cka(x: jax.Array, y: jax.Array, batch_size: int, key: jax.Array) -> jax.Array:
    """Linear CKA from unbiased HSIC averaged over random minibatches of `batch_size` examples
    (one pass over a permutation from `key`; the last partial batch is dropped). Memory is
    batch_size^2, not n^2; the estimate converges to `linear_cka(x, y, debiased=True)`."""
    x, y = _check(x, y)
    n = x.shape[0]
    if not 4 <= batch_size <= n:
        raise ValueError(f"batch_size must be in [4, {n}], got {batch_size}")
    order = jax.random.permutation(key, n)[: (n // batch_size) * batch_size].reshape(-1, batch_size)

    @jax.jit
    def estimate(x, y, order):
        def one(idx):
            xb, yb = x[idx], y[idx]
            k, l = xb @ xb.T, yb @ yb.T
            return jnp.stack([hsic_unbiased(k, l), hsic_unbiased(k, k), hsic_unbiased(l, l)])

        xy, xx, yy = jax.lax.map(one, order).mean(axis=0)
        return xy / jnp.sqrt(xx * yy)

    return estimate(x, y, order)
