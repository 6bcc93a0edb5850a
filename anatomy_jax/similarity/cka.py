"""Centered kernel alignment (CKA) between two representations of the same n examples.

    CKA(K, L) = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L))

with K, L the n x n Gram matrices of x (n x p) and y (n x q) (Kornblith et al., "Similarity of
neural network representations revisited", ICML 2019).

* biased HSIC (the paper's default): tr(K H L H) / (n - 1)^2, H = I - 11^T / n.
* debiased HSIC (Song et al. 2012, "Feature selection via dependence maximization", eq. 5): the
  unbiased U-statistic on Gram matrices with zeroed diagonals; its CKA is not biased upwards when
  p, q are large relative to n.
* minibatch CKA (Nguyen et al., "Do wide and deep networks learn the same things?", ICLR 2021):
  unbiased HSIC averaged over minibatches, then the ratio; for n too large for n x n Gram matrices.

Every index is invariant to translating x or y, but in float32 a Gram matrix of features with a
large common offset (ReLU features + 20) cancels catastrophically: the debiased CKA of such
features used to come out 0.5404 against an exact 0.5303. So the columns are centred first (with a
mean refined by a second pass, `center`), which changes no index mathematically.

Linear CKA picks the cheaper of two exact paths (`gram_path`): feature space (p x p, q x q and
p x q cross-products, n (p^2 + q^2 + pq) flops) when p, q are small against n, otherwise the n x n
Gram matrices (n^2 (p + q) flops, n^2 memory), which is what a flattened conv map (p = 32,768 at
n = 2,000) needs. The debiased HSIC has a feature-space form too: for centred x, y with row norms
d_x, d_y, tr(K~ L~) = ||x^T y||_F^2 - d_x . d_y and the remaining terms are O(n p) sums.
"""

from __future__ import annotations

import functools

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


def center(x: jax.Array) -> jax.Array:
    """x (n x p) minus its column means. The mean is refined by the mean of the residuals (a
    second pass), so a large offset costs float32 rounding of the size of the spread, not of the
    offset; every similarity index here is translation invariant and centres its inputs first."""
    mean = x.mean(axis=0)
    mean = mean + (x - mean).mean(axis=0)
    return x - mean


# Centring is compiled apart from the products that follow: inside one program XLA:CPU fuses the
# subtraction into a Gram product's operands, which then runs 3-5x slower (5.2 s instead of 1.6 s
# for a 2,000 x 32,768 float32 x).
_centered = jax.jit(center)


def gram_path(n: int, p: int, q: int) -> bool:
    """Whether linear CKA of x (n x p) and y (n x q) is cheaper through the n x n Gram matrices
    (n^2 (p + q) flops) than through feature-space cross-products (n (p^2 + q^2 + pq) flops)."""
    return n * (p + q) < p * p + q * q + p * q


def _center_gram(k: jax.Array) -> jax.Array:
    return k - k.mean(axis=0, keepdims=True) - k.mean(axis=1, keepdims=True) + k.mean()


def _unbiased(trace_kl: jax.Array, k_sum: jax.Array, l_sum: jax.Array, k_rows: jax.Array, l_rows: jax.Array,
              n: int) -> jax.Array:
    """Song et al.'s estimator from its sufficient statistics: tr(K~ L~), 1^T K~ 1, 1^T L~ 1 and
    the row sums K~ 1, L~ 1 (K~, L~ the Gram matrices with zeroed diagonals)."""
    return (trace_kl + k_sum * l_sum / ((n - 1) * (n - 2)) - 2.0 * jnp.dot(k_rows, l_rows) / (n - 2)) / (n * (n - 3))


def hsic_unbiased(k: jax.Array, l: jax.Array) -> jax.Array:
    """The unbiased HSIC estimator of Song et al. (2012) from two n x n Gram matrices, in O(n^2)
    (no n x n product). Centre the features before forming linear Gram matrices (`center`)."""
    n = k.shape[0]
    k = k * (1.0 - jnp.eye(n, dtype=k.dtype))
    l = l * (1.0 - jnp.eye(n, dtype=l.dtype))
    k_rows, l_rows = k.sum(axis=1), l.sum(axis=1)
    return _unbiased(jnp.sum(k * l), k_rows.sum(), l_rows.sum(), k_rows, l_rows, n)


def _hsic_biased(k: jax.Array, l: jax.Array) -> jax.Array:
    return jnp.sum(_center_gram(k) * _center_gram(l)) / (k.shape[0] - 1) ** 2


def _cka_from_grams(k: jax.Array, l: jax.Array, debiased: bool) -> jax.Array:
    hsic = hsic_unbiased if debiased else _hsic_biased
    return hsic(k, l) / jnp.sqrt(hsic(k, k) * hsic(l, l))


def _feature_hsic(a: jax.Array, b: jax.Array, debiased: bool) -> jax.Array:
    """HSIC of the linear kernels of centred a (n x p), b (n x q) from feature-space sums: the
    p x q cross-product and O(n p) row statistics, never an n x n matrix."""
    n = a.shape[0]
    frob = jnp.sum((a.T @ b) ** 2)  # = tr(K L)
    if not debiased:
        return frob / (n - 1) ** 2
    da, db = jnp.sum(a * a, axis=1), jnp.sum(b * b, axis=1)  # diagonals of K, L
    sa, sb = a.sum(axis=0), b.sum(axis=0)  # ~0 after centring; kept so the algebra is exact
    return _unbiased(frob - jnp.dot(da, db), sa @ sa - da.sum(), sb @ sb - db.sum(), a @ sa - da, b @ sb - db, n)


@functools.partial(jax.jit, static_argnums=(2, 3))
def _linear_cka_centered(x: jax.Array, y: jax.Array, debiased: bool, gram: bool) -> jax.Array:
    if gram:
        return _cka_from_grams(x @ x.T, y @ y.T, debiased)
    return _feature_hsic(x, y, debiased) / jnp.sqrt(_feature_hsic(x, x, debiased) * _feature_hsic(y, y, debiased))


def _linear_cka(x: jax.Array, y: jax.Array, debiased: bool, gram: bool) -> jax.Array:
    """Linear CKA through the Gram matrices (`gram=True`) or feature-space sums; both exact."""
    return _linear_cka_centered(_centered(x), _centered(y), debiased, gram)


def linear_cka(x: jax.Array, y: jax.Array, debiased: bool = False) -> jax.Array:
    """Linear CKA of x (n x p) and y (n x q): 1 for identical representations, invariant to
    orthogonal transforms, isotropic scaling and translation, not to general invertible maps.

    Biased HSIC by default; `debiased=True` uses the unbiased HSIC. Inputs are centred first
    (float32-safe for large offsets); the computation goes through feature-space cross-products
    when p, q are small against n and through n x n Gram matrices otherwise (`gram_path`).
    """
    x, y = _check(x, y)
    return _linear_cka(x, y, debiased, gram_path(*x.shape, y.shape[1]))


def _rbf_gram(x: jax.Array, sigma_fraction: float) -> jax.Array:
    sq = jnp.sum(x ** 2, axis=1)
    d2 = jnp.maximum(sq[:, None] + sq[None, :] - 2.0 * x @ x.T, 0.0)
    median = jnp.median(jnp.sqrt(d2)[jnp.triu_indices(x.shape[0], 1)])
    sigma = sigma_fraction * median
    return jnp.exp(-d2 / (2.0 * sigma ** 2))


@functools.partial(jax.jit, static_argnums=(2, 3))
def _rbf_cka(x: jax.Array, y: jax.Array, sigma_fraction: float, debiased: bool) -> jax.Array:
    return _cka_from_grams(_rbf_gram(x, sigma_fraction), _rbf_gram(y, sigma_fraction), debiased)


def rbf_cka(x: jax.Array, y: jax.Array, sigma_fraction: float = 0.8, debiased: bool = False) -> jax.Array:
    """CKA with RBF kernels exp(-||a - b||^2 / (2 sigma^2)), sigma = `sigma_fraction` x the median
    pairwise distance (over pairs i < j) of each representation (Kornblith et al. use 0.2-0.8).
    Forms n x n matrices."""
    if not sigma_fraction > 0:
        raise ValueError(f"sigma_fraction must be > 0, got {sigma_fraction}")
    x, y = _check(x, y)
    # distances are translation invariant; centring keeps |a|^2 + |b|^2 - 2 a.b exact in float32
    return _rbf_cka(_centered(x), _centered(y), float(sigma_fraction), debiased)


@jax.jit
def _minibatch_cka(x: jax.Array, y: jax.Array, order: jax.Array) -> jax.Array:
    def one(idx):
        xb, yb = x[idx], y[idx]
        k, l = xb @ xb.T, yb @ yb.T
        return jnp.stack([hsic_unbiased(k, l), hsic_unbiased(k, k), hsic_unbiased(l, l)])

    xy, xx, yy = jax.lax.map(one, order).mean(axis=0)
    return xy / jnp.sqrt(xx * yy)


def minibatch_linear_cka(x: jax.Array, y: jax.Array, batch_size: int, key: jax.Array) -> jax.Array:
    """Linear CKA from unbiased HSIC averaged over random minibatches of `batch_size` examples
    (one pass over `jax.random.permutation(key, n)`; the last partial batch is dropped). Memory is
    batch_size^2, not n^2; the estimate converges to `linear_cka(x, y, debiased=True)`. The
    columns are centred over all n examples first (float32-safe for large offsets)."""
    x, y = _check(x, y)
    n = x.shape[0]
    if not 4 <= batch_size <= n:
        raise ValueError(f"batch_size must be in [4, {n}], got {batch_size}")
    order = jax.random.permutation(key, n)[: (n // batch_size) * batch_size].reshape(-1, batch_size)
    # unbiased HSIC is translation invariant: centring only removes float32 rounding
    return _minibatch_cka(_centered(x), _centered(y), order)
