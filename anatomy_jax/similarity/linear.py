"""Linear maps between representations: least squares, ridge, orthogonal Procrustes, and scores.

Every fit works from a thin SVD of x (factors of size n x min(n, p) and min(n, p) x p), so n can be
tens of thousands and p, q thousands (a fitted map is p x q). The Procrustes distance needs no map: it is computed from
min(n, p) x min(n, q) factors, so it also serves flattened conv maps with p, q in the tens of
thousands.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import chex
import jax
import jax.numpy as jnp
import numpy as np

from anatomy_jax.similarity.cka import _centered, _check


class RidgeBasis(NamedTuple):
    """The thin SVD of a centred x (n x p): everything a ridge fit from x needs, computed once so
    that maps from x to many targets, under many ridges, cost one SVD (`ridge_basis`)."""

    mean: jax.Array  # (p,)
    u: jax.Array  # (n, r)
    s: jax.Array  # (r,)
    vt: jax.Array  # (r, p)

    @property
    def scale(self) -> jax.Array:
        """Mean squared singular value: the unit of the relative ridges of `fit_ridge_cv`."""
        return jnp.mean(self.s ** 2)


@jax.jit
def _basis(x) -> RidgeBasis:
    mean = x.mean(axis=0)
    u, s, vt = jnp.linalg.svd(x - mean, full_matrices=False)  # economical: no n x n matrix
    return RidgeBasis(mean, u, s, vt)


def ridge_basis(x: jax.Array) -> RidgeBasis:
    """The thin SVD of the centred x (n x p) for `fit_linear_map(..., basis=)`."""
    x = jnp.asarray(x, jnp.float32)
    chex.assert_rank(x, 2)
    return _basis(x)


@jax.jit
def _ridge(basis: RidgeBasis, y, ridge):
    my = y.mean(axis=0)
    # W = V diag(s / (s^2 + ridge)) U^T Y; with ridge = 0 the minimum-norm least-squares solution
    s = basis.s
    tol = s[0] * max(basis.u.shape[0], basis.vt.shape[1]) * jnp.finfo(s.dtype).eps
    factor = jnp.where(s > tol, s / (s ** 2 + ridge), 0.0)
    w = basis.vt.T @ (factor[:, None] * (basis.u.T @ (y - my)))
    return w, my - basis.mean @ w


def fit_linear_map(x: jax.Array, y: jax.Array, ridge: float = 0.0,
                   basis: RidgeBasis | None = None) -> tuple[jax.Array, jax.Array]:
    """(W, b) minimising ||x W + b - y||^2 + ridge ||W||^2 for x (n x p), y (n x q).

    The intercept is not penalised. `ridge=0` gives (minimum-norm) least squares. Computed from a
    thin SVD of the centred x; pass `basis=ridge_basis(x)` to reuse it across targets and ridges.
    """
    if ridge < 0:
        raise ValueError(f"ridge must be >= 0, got {ridge}")
    x, y = _check(x, y)
    if basis is None:
        basis = _basis(x)
    elif basis.u.shape[0] != x.shape[0] or basis.vt.shape[1] != x.shape[1]:
        raise ValueError(f"the basis was computed for a {basis.u.shape[0]} x {basis.vt.shape[1]} x, not {x.shape}")
    return _ridge(basis, y, jnp.float32(ridge))


@jax.jit
def _r2(y_true, y_pred):
    sse = jnp.sum((y_true - y_pred) ** 2)
    sst = jnp.sum((y_true - y_true.mean(axis=0)) ** 2)
    return 1.0 - sse / sst


def r2_score(y_true: jax.Array, y_pred: jax.Array) -> jax.Array:
    """Coefficient of determination over all output dimensions: 1 - SSE / total sum of squares
    around the per-dimension mean (variance-weighted, as sklearn's `variance_weighted`)."""
    y_true, y_pred = jnp.asarray(y_true, jnp.float32), jnp.asarray(y_pred, jnp.float32)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"shapes differ: {y_true.shape} vs {y_pred.shape}")
    return _r2(y_true, y_pred)


@jax.jit
def _held_out_r2(basis: RidgeBasis, y_train, x_val, y_val, ridges):
    def score(ridge):
        w, b = _ridge(basis, y_train, ridge)
        return _r2(y_val, x_val @ w + b)

    return jax.lax.map(score, ridges)


def fit_ridge_cv(x_train: jax.Array, y_train: jax.Array, x_val: jax.Array, y_val: jax.Array,
                 ridges: Sequence[float] = (0.0, 1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0),
                 basis: RidgeBasis | None = None) -> tuple[jax.Array, jax.Array, float, dict[float, float]]:
    """Fits one map per ridge on the training pairs and keeps the best R^2 on held-out pairs.

    Ridges are relative to the mean squared singular value of the centred x_train, so one grid suits
    every layer's scale; all share one SVD (`basis`, computed here unless given) and one compiled
    scoring pass. Returns (W, b, chosen ridge (absolute), {relative ridge: held-out R^2}).
    """
    x_train, y_train = _check(x_train, y_train)
    x_val, y_val = _check(x_val, y_val)
    if not ridges or min(ridges) < 0:
        raise ValueError(f"ridges must be a non-empty list of values >= 0, got {list(ridges)}")
    basis = _basis(x_train) if basis is None else basis
    scale = float(basis.scale)
    r2 = np.asarray(_held_out_r2(basis, y_train, x_val, y_val, jnp.asarray(ridges, jnp.float32) * scale))
    scores = {float(r): float(v) for r, v in zip(ridges, r2)}
    best = float(ridges[int(np.nanargmax(r2))]) * scale
    w, b = fit_linear_map(x_train, y_train, best, basis=basis)
    return w, b, best, scores


def orthogonal_procrustes(x: jax.Array, y: jax.Array) -> jax.Array:
    """The orthogonal R (p x p) minimising ||x R - y||_F for x, y (n x p): R = U V^T from the SVD
    of x^T y (Schönemann 1966). No centring or scaling is applied here. It forms p x p matrices,
    fine for small p; `procrustes_distance` does not need R and never forms them."""
    x, y = _check(x, y)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"Procrustes needs equal widths, got {x.shape[1]} and {y.shape[1]}")
    u, _, vt = jnp.linalg.svd(x.T @ y, full_matrices=False)
    return u @ vt


def row_factor(x: jax.Array) -> jax.Array:
    """An n x r matrix B with B B^T = x x^T for x (n x p), r = min(n, p): x itself when p <= n,
    else R^T from the thin QR x^T = Q R (2 n^2 p flops, backward stable: unlike an eigen-
    decomposition of x x^T it does not square the condition number). Since x = B C with C having
    orthonormal rows, x^T y and B_x^T B_y share their singular values."""
    n, p = x.shape
    return x if p <= n else jnp.linalg.qr(x.T, mode="r").T


@jax.jit
def _procrustes_distance(x: jax.Array, y: jax.Array) -> jax.Array:
    """The distance of centred x, y."""
    nuclear = jnp.sum(jnp.linalg.svd(row_factor(x).T @ row_factor(y), compute_uv=False))
    return jnp.maximum(2.0 - 2.0 * nuclear / (jnp.linalg.norm(x) * jnp.linalg.norm(y)), 0.0)


def procrustes_distance(x: jax.Array, y: jax.Array) -> jax.Array:
    """Orthogonal Procrustes distance (Ding et al., "Grounding representation similarity", 2021):
    with x, y centred and scaled to unit Frobenius norm, min_R ||x R - y||_F^2 = 2 - 2 ||x^T y||_*.
    0 for representations equal up to rotation, reflection, translation and isotropic scaling;
    widths may differ (the narrower one is zero-padded implicitly).

    The nuclear norm comes from at most min(n, p) x min(n, q) factors (`row_factor`: thin QRs when
    a width exceeds n), so wide representations (p = 32,768) need no p x q matrix and no rotation.
    """
    x, y = _check(x, y)
    return _procrustes_distance(_centered(x), _centered(y))
