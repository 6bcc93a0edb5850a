"""Linear maps between representations: least squares, ridge, orthogonal Procrustes, and scores.

Every fit works in feature space (p x p and p x q products), never with an n x n matrix, so n can be
tens of thousands and p, q thousands.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp

from anatomy_jax.similarity.cka import _check


@jax.jit
def _ridge(x, y, ridge):
    mx, my = x.mean(axis=0), y.mean(axis=0)
    xc, yc = x - mx, y - my
    u, s, vt = jnp.linalg.svd(xc, full_matrices=False)  # (n x r), economical: no n x n matrix
    # W = V diag(s / (s^2 + ridge)) U^T Y; with ridge = 0 the minimum-norm least-squares solution
    tol = s[0] * max(x.shape) * jnp.finfo(s.dtype).eps
    factor = jnp.where(s > tol, s / (s ** 2 + ridge), 0.0)
    w = vt.T @ (factor[:, None] * (u.T @ yc))
    return w, my - mx @ w


def fit_linear_map(x: jax.Array, y: jax.Array, ridge: float = 0.0) -> tuple[jax.Array, jax.Array]:
    """(W, b) minimising ||x W + b - y||^2 + ridge ||W||^2 for x (n x p), y (n x q).

    The intercept is not penalised. `ridge=0` gives (minimum-norm) least squares. Computed from a
    thin SVD of the centred x.
    """
    if ridge < 0:
        raise ValueError(f"ridge must be >= 0, got {ridge}")
    x, y = _check(x, y)
    return _ridge(x, y, jnp.float32(ridge))


def r2_score(y_true: jax.Array, y_pred: jax.Array) -> jax.Array:
    """Coefficient of determination over all output dimensions: 1 - SSE / total sum of squares
    around the per-dimension mean (variance-weighted, as sklearn's `variance_weighted`)."""
    y_true, y_pred = jnp.asarray(y_true, jnp.float32), jnp.asarray(y_pred, jnp.float32)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"shapes differ: {y_true.shape} vs {y_pred.shape}")
    sse = jnp.sum((y_true - y_pred) ** 2)
    sst = jnp.sum((y_true - y_true.mean(axis=0)) ** 2)
    return 1.0 - sse / sst


def fit_ridge_cv(x_train: jax.Array, y_train: jax.Array, x_val: jax.Array, y_val: jax.Array,
                 ridges: Sequence[float] = (0.0, 1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)
                 ) -> tuple[jax.Array, jax.Array, float, dict[float, float]]:
    """Fits one map per ridge on the training pairs and keeps the best R^2 on held-out pairs.

    Ridges are relative to the mean squared singular value of the centred x_train, so one grid suits
    every layer's scale. Returns (W, b, chosen ridge (absolute), {relative ridge: held-out R^2}).
    """
    x_train, y_train = _check(x_train, y_train)
    scale = float(jnp.mean(jnp.linalg.svd(x_train - x_train.mean(axis=0), compute_uv=False) ** 2))
    scores, best = {}, None
    for r in ridges:
        w, b = fit_linear_map(x_train, y_train, r * scale)
        scores[r] = float(r2_score(y_val, x_val @ w + b))
        if best is None or scores[r] > best[2]:
            best = (w, b, scores[r], r * scale)
    return best[0], best[1], best[3], scores


def orthogonal_procrustes(x: jax.Array, y: jax.Array) -> jax.Array:
    """The orthogonal R (p x p) minimising ||x R - y||_F for x, y (n x p): R = U V^T from the SVD
    of x^T y (Schönemann 1966). No centring or scaling is applied here."""
    x, y = _check(x, y)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"Procrustes needs equal widths, got {x.shape[1]} and {y.shape[1]}")
    u, _, vt = jnp.linalg.svd(x.T @ y, full_matrices=False)
    return u @ vt


def procrustes_distance(x: jax.Array, y: jax.Array) -> jax.Array:
    """Orthogonal Procrustes distance (Ding et al., "Grounding representation similarity", 2021):
    with x, y centred and scaled to unit Frobenius norm, min_R ||x R - y||_F^2 = 2 - 2 ||x^T y||_*.
    0 for representations equal up to rotation, reflection, translation and isotropic scaling;
    widths may differ (the narrower one is zero-padded implicitly)."""
    x, y = _check(x, y)
    x = x - x.mean(axis=0)
    y = y - y.mean(axis=0)
    x = x / jnp.linalg.norm(x)
    y = y / jnp.linalg.norm(y)
    nuclear = jnp.sum(jnp.linalg.svd(x.T @ y, compute_uv=False))
    return jnp.maximum(2.0 - 2.0 * nuclear, 0.0)
