"""Canonical correlation analysis and the CCA-based similarity indices SVCCA and PWCCA.

All are computed from orthonormal bases of the centred representations (thin QR/SVD), so no
covariance matrix is inverted: the canonical correlations are the singular values of Qx^T Qy.
That keeps float32 exact enough that every correlation of (X, X A), A invertible, is 1 within
1e-5 (inverse square roots of covariances miss this by ~2e-4).

* CCA (Hotelling 1936): rho_1 >= ... >= rho_m, m = min(rank x, rank y).
* SVCCA (Raghu et al., NeurIPS 2017): keep the top singular directions of each representation
  explaining `variance` of it (0.99 by default), or a stated number `dims` of them, then the mean
  canonical correlation. The SVD step makes it depend on the representations' scales along
  directions, so it is only approximately invariant to invertible maps that reshape the spectrum.
* PWCCA (Morcos et al., NeurIPS 2018): canonical correlations weighted by how much of x each
  canonical variate accounts for, alpha_i = sum_j |<h_i, x_j>| (h_i the i-th unit canonical
  variate of x, x_j the j-th centred neuron of x), normalised to sum 1. Not symmetric in x and y.
  The reference (google/svcca, `compute_pwcca`) adds the neurons' means back to the variates and
  projects uncentred neurons; this one is translation invariant, and equal to it for centred data.

Dimension rule. Canonical correlations of k-dimensional representations are biased towards 1
unless n is large against k (n = 2k random directions already give top correlations near 1), so
whenever a representation is reduced (`dims` or `variance`, always in SVCCA) the kept dimension k
must satisfy n >= 10 k, or a ValueError says which k and n failed. Wide representations (p >= n,
e.g. flattened conv maps) can only be compared after such a reduction; the singular directions
come from a thin QR of x^T and an n x n SVD when p > n (`row_factor`), never a p x p matrix.
Without reduction, CCA and PWCCA need n > p, q (as always) and are best trusted for n >= 10 p.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from anatomy_jax.similarity.cka import _centered, _check, center
from anatomy_jax.similarity.linear import row_factor

MIN_EXAMPLES_PER_DIM = 10


def _basis(x: jax.Array, rtol: float) -> tuple[jax.Array, jax.Array]:
    """An orthonormal basis of the column space of centred x via SVD, and its rank: columns whose
    singular value is below rtol x the largest are zeroed (a fixed shape, so it jits)."""
    u, s, _ = jnp.linalg.svd(center(x), full_matrices=False)
    keep = s > rtol * s[0]
    return u * keep, keep.sum()


@functools.partial(jax.jit, static_argnums=2)
def _cca(x, y, rtol):
    """Correlations (descending), x's canonical variates (n x m, unit norm) and which of the m are
    real (the first min(rank x, rank y); the rest come from zeroed basis columns)."""
    (qx, rx), (qy, ry) = _basis(x, rtol), _basis(y, rtol)
    u, rho, _ = jnp.linalg.svd(qx.T @ qy, full_matrices=False)
    valid = jnp.arange(rho.shape[0]) < jnp.minimum(rx, ry)
    return jnp.clip(rho, 0.0, 1.0), qx @ u, valid


@functools.partial(jax.jit, static_argnums=3)
def _pwcca(x_reduced, y_reduced, x, rtol):
    """PWCCA of the (possibly reduced) pair, weights from the projections of x's own (centred)
    neurons."""
    rho, variates, valid = _cca(x_reduced, y_reduced, rtol)
    alpha = jnp.abs(variates.T @ x).sum(axis=1) * valid
    return jnp.sum(alpha / alpha.sum() * rho)


@jax.jit
def _singular(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Left singular vectors and values of the centred x (n x min(n, p)), through `row_factor`."""
    u, s, _ = jnp.linalg.svd(row_factor(x), full_matrices=False)
    return u, s


def _kept(s: np.ndarray, dims: int | None, variance: float | None) -> int:
    """How many leading singular directions to keep: `dims` (at most the rank available), or the
    fewest whose squared singular values make up `variance` of the total."""
    if dims is not None:
        return min(dims, len(s))
    share = np.cumsum(s.astype(np.float64) ** 2) / np.sum(s.astype(np.float64) ** 2)
    return min(int(np.searchsorted(share, variance) + 1), len(s))


def _check_reduction(dims: int | None, variance: float | None) -> None:
    if dims is not None and (isinstance(dims, bool) or not isinstance(dims, (int, np.integer)) or dims < 1):
        raise ValueError(f"dims must be a positive integer, got {dims!r}")
    if variance is not None and not 0.0 < variance <= 1.0:
        raise ValueError(f"variance must be in (0, 1], got {variance}")


def reduce_dimension(x: jax.Array, dims: int | None = None, variance: float | None = None) -> jax.Array:
    """The top singular directions of the centred x (n x p), scaled by their singular values
    (n x k, the SVCCA reduction): `dims` of them, or the fewest explaining `variance` of x's
    variance. Refuses (ValueError) when n < 10 k, where canonical correlations are unreliable."""
    _check_reduction(dims, variance)
    if (dims is None) == (variance is None):
        raise ValueError(f"give exactly one of dims and variance, got dims={dims!r}, variance={variance!r}")
    x = jnp.asarray(x, jnp.float32)
    u, s = _singular(_centered(x))
    k = _kept(np.asarray(s), dims, variance)
    n = x.shape[0]
    if n < MIN_EXAMPLES_PER_DIM * k:
        what = f"dims={dims}" if dims is not None else f"variance={variance}"
        raise ValueError(f"{what} keeps {k} directions, but {n} examples support at most "
                         f"{n // MIN_EXAMPLES_PER_DIM} (CCA needs n >= {MIN_EXAMPLES_PER_DIM} x kept dimension); "
                         f"pass dims <= {n // MIN_EXAMPLES_PER_DIM} or a smaller variance, or use more examples")
    return u[:, :k] * s[:k]


def _prepare(x: jax.Array, y: jax.Array, dims: int | None, variance: float | None
             ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(x, y) validated, then reduced when `dims` or `variance` is given (else they must be
    narrower than n); returns the pair CCA runs on and the original x (for PWCCA weights)."""
    _check_reduction(dims, variance)
    x, y = _check(x, y)
    n = x.shape[0]
    if dims is not None or variance is not None:
        kwargs = dict(dims=dims) if dims is not None else dict(variance=variance)
        return reduce_dimension(x, **kwargs), reduce_dimension(y, **kwargs), x
    if n <= max(x.shape[1], y.shape[1]):
        raise ValueError(f"CCA needs more examples ({n}) than features ({x.shape[1]}, {y.shape[1]}); reduce the "
                         f"dimension first: pass dims <= {n // MIN_EXAMPLES_PER_DIM} (n >= {MIN_EXAMPLES_PER_DIM} x "
                         "kept dimension) or variance=, or average conv maps over space")
    return x, y, x


def cca(x: jax.Array, y: jax.Array, rtol: float = 1e-6, *, dims: int | None = None,
        variance: float | None = None) -> jax.Array:
    """Canonical correlations of x (n x p) and y (n x q), descending. Directions whose singular
    value is below `rtol` x the largest are dropped (rank deficiency). Without `dims`/`variance`
    n must exceed p and q; with one of them each side is first reduced to its top singular
    directions (`reduce_dimension`), which must leave n >= 10 x the kept dimension."""
    x_cca, y_cca, _ = _prepare(x, y, dims, variance)
    rho, _, valid = _cca(x_cca, y_cca, rtol)
    return rho[np.asarray(valid)]


def svcca(x: jax.Array, y: jax.Array, variance: float = 0.99, dims: int | None = None) -> jax.Array:
    """Mean canonical correlation after keeping the top singular directions of x and y: `dims` of
    each if given, else the fewest that explain `variance` of each. Refuses (ValueError) a kept
    dimension k with n < 10 k; for wide representations pass e.g. dims=n // 10."""
    if not 0.0 < variance <= 1.0:
        raise ValueError(f"variance must be in (0, 1], got {variance}")
    return cca(x, y, dims=dims, variance=None if dims is not None else variance).mean()


def pwcca(x: jax.Array, y: jax.Array, rtol: float = 1e-6, *, dims: int | None = None,
          variance: float | None = None) -> jax.Array:
    """Projection-weighted mean canonical correlation of x with y (weights from x's neurons).
    `dims`/`variance` reduce both first as in `cca`; the weights still project x's original
    (centred) neurons onto its canonical variates."""
    x_cca, y_cca, x = _prepare(x, y, dims, variance)
    return _pwcca(x_cca, y_cca, _centered(x), rtol)
