"""Canonical correlation analysis and the CCA-based similarity indices SVCCA and PWCCA.

All are computed from orthonormal bases of the centred representations (thin QR), so no
covariance matrix is inverted: the canonical correlations are the singular values of Qx^T Qy.
That keeps float32 exact enough that every correlation of (X, X A), A invertible, is 1 within
1e-5 (inverse square roots of covariances miss this by ~2e-4).

* CCA (Hotelling 1936): rho_1 >= ... >= rho_m, m = min(rank x, rank y).
* SVCCA (Raghu et al., NeurIPS 2017): keep the top singular directions of each representation
  explaining `variance` of it (0.99 by default), then the mean canonical correlation. The SVD step
  makes it depend on the representations' scales along directions, so it is only approximately
  invariant to invertible maps that reshape the spectrum.
* PWCCA (Morcos et al., NeurIPS 2018): canonical correlations weighted by how much of x each
  canonical variate accounts for, alpha_i = sum_j |<h_i, x_j>| (h_i the i-th canonical variate of
  x, x_j the j-th centred neuron), normalised to sum 1. Not symmetric in x and y.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from anatomy_jax.similarity.cka import _check


def _basis(x: jax.Array, rtol: float) -> tuple[jax.Array, jax.Array]:
    """An orthonormal basis of the column space of centred x via SVD, and its rank: columns whose
    singular value is below rtol x the largest are zeroed (a fixed shape, so it jits)."""
    x = x - x.mean(axis=0)
    u, s, _ = jnp.linalg.svd(x, full_matrices=False)
    keep = s > rtol * s[0]
    return u * keep, keep.sum()


@functools.partial(jax.jit, static_argnums=2)
def _cca(x, y, rtol):
    """Correlations (descending), x's canonical variates (n x m) and which of the m are real
    (the first min(rank x, rank y); the rest come from zeroed basis columns)."""
    (qx, rx), (qy, ry) = _basis(x, rtol), _basis(y, rtol)
    u, rho, _ = jnp.linalg.svd(qx.T @ qy, full_matrices=False)
    valid = jnp.arange(rho.shape[0]) < jnp.minimum(rx, ry)
    return jnp.clip(rho, 0.0, 1.0), qx @ u, valid


@functools.partial(jax.jit, static_argnums=2)
def _pwcca(x, y, rtol):
    rho, variates, valid = _cca(x, y, rtol)
    alpha = jnp.abs(variates.T @ (x - x.mean(axis=0))).sum(axis=1) * valid
    return jnp.sum(alpha / alpha.sum() * rho)


def cca(x: jax.Array, y: jax.Array, rtol: float = 1e-6) -> jax.Array:
    """Canonical correlations of x (n x p) and y (n x q), descending. Directions whose singular
    value is below `rtol` x the largest are dropped (rank deficiency), so n must exceed p and q."""
    x, y = _check(x, y)
    if x.shape[0] <= max(x.shape[1], y.shape[1]):
        raise ValueError(f"CCA needs more examples ({x.shape[0]}) than features ({x.shape[1]}, {y.shape[1]}); "
                         "reduce the dimension first (e.g. svcca)")
    rho, _, valid = _cca(x, y, rtol)
    return rho[np.asarray(valid)]


def _top_variance(x: jax.Array, variance: float) -> jax.Array:
    x = x - x.mean(axis=0)
    u, s, _ = jnp.linalg.svd(x, full_matrices=False)
    share = jnp.cumsum(s ** 2) / jnp.sum(s ** 2)
    k = int(jnp.searchsorted(share, variance) + 1)
    return u[:, :k] * s[:k]


def svcca(x: jax.Array, y: jax.Array, variance: float = 0.99) -> jax.Array:
    """Mean canonical correlation after keeping the top singular directions of x and y that
    explain `variance` of each."""
    if not 0.0 < variance <= 1.0:
        raise ValueError(f"variance must be in (0, 1], got {variance}")
    x, y = _check(x, y)
    return cca(_top_variance(x, variance), _top_variance(y, variance)).mean()


def pwcca(x: jax.Array, y: jax.Array, rtol: float = 1e-6) -> jax.Array:
    """Projection-weighted mean canonical correlation of x with y (weights from x)."""
    x, y = _check(x, y)
    if x.shape[0] <= max(x.shape[1], y.shape[1]):
        raise ValueError(f"CCA needs more examples ({x.shape[0]}) than features ({x.shape[1]}, {y.shape[1]}); "
                         "reduce the dimension first (e.g. average conv maps over space)")
    return _pwcca(x, y, rtol)
