"""Rank statistics that say how sure they are: Spearman and partial Spearman correlations with
permutation p-values and bootstrap confidence intervals.

The partial Spearman correlation of x and y given covariates Z is the Pearson correlation of the
residuals of rank(x) and rank(y) after least-squares regression (with intercept) on the ranks of
each column of Z: the association beyond the design variables. Without covariates the design is
the intercept alone and the partial is the plain Spearman correlation, so one code path serves both.

Undefined statistics (fewer points than the design needs, constant or non-finite inputs) are None,
so results stay JSON-able. Randomness comes from an explicit `numpy.random.default_rng(seed)`.

For matrices over nets (similarity, adversarial transfer), `mantel_test` and `group_difference_test`
permute net labels, since pairs that share a net are not independent.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt
from scipy import stats

_REL_TOL = 1e-9  # residual norms below this fraction of the centred norm count as zero
_TIE_TOL = 1e-12  # permutation statistics within this of the observed one count as ties
_BATCH = 256  # permutations evaluated per vectorised batch


class _Residuals(NamedTuple):
    """Rank residuals of x and y on the design, and an orthonormal basis of the design."""

    x: np.ndarray  # (n,)
    y: np.ndarray  # (n,)
    basis: np.ndarray  # (n, rank of the design)


def _vector(a: npt.ArrayLike, name: str) -> np.ndarray:
    v = np.asarray(a, dtype=np.float64)
    if v.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {v.shape}")
    return v


def _pair(x: npt.ArrayLike, y: npt.ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    xv, yv = _vector(x, "x"), _vector(y, "y")
    if xv.shape != yv.shape:
        raise ValueError(f"x and y must have the same length, got {xv.shape[0]} and {yv.shape[0]}")
    return xv, yv


def _matrix(covariates: npt.ArrayLike | None, n: int) -> np.ndarray:
    """Covariates as an (n, k) float array: None is (n, 0) and a vector is one column."""
    if covariates is None:
        return np.zeros((n, 0))
    z = np.asarray(covariates, dtype=np.float64)
    if z.ndim == 1:
        z = z[:, None]
    if z.ndim != 2 or z.shape[0] != n:
        raise ValueError(f"covariates must have shape ({n}, k) to match x, got {z.shape}")
    return z


def _labels(labels: npt.ArrayLike | None, n: int, name: str) -> np.ndarray | None:
    if labels is None:
        return None
    v = np.asarray(labels)
    if v.shape != (n,):
        raise ValueError(f"{name} must have one label per point, shape ({n},), got {v.shape}")
    return v


def _positive(value: int, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def _used_columns(z: np.ndarray) -> np.ndarray:
    """The covariate columns that are not constant (a constant column is the intercept again)."""
    return z[:, [j for j in range(z.shape[1]) if z.shape[0] and np.ptp(z[:, j]) > 0]]


def _basis(design: np.ndarray) -> np.ndarray:
    """An orthonormal basis of the column space of `design` (collinear columns count once)."""
    u, s, _ = np.linalg.svd(design, full_matrices=False)
    return u[:, s > _REL_TOL * s[0]]


def _residualise(v: np.ndarray, basis: np.ndarray) -> np.ndarray:
    """v minus its least-squares fit on the design; v may be (n,) or a batch (b, n)."""
    return v - (v @ basis) @ basis.T


def _residuals(x: np.ndarray, y: np.ndarray, z: np.ndarray) -> _Residuals | None:
    """Rank residuals of x and y on [1, ranks of the non-constant columns of z]; None if undefined."""
    n = x.shape[0]
    if n < 3 or not (np.isfinite(x).all() and np.isfinite(y).all() and np.isfinite(z).all()):
        return None
    design = np.column_stack([np.ones(n), *(stats.rankdata(c) for c in _used_columns(z).T)])
    basis = _basis(design)
    if n - basis.shape[1] < 2:  # one residual dimension left: every correlation would be +-1
        return None
    rx, ry = stats.rankdata(x), stats.rankdata(y)
    ex, ey = _residualise(rx, basis), _residualise(ry, basis)
    for r, e in ((rx, ex), (ry, ey)):
        scale = np.linalg.norm(r - r.mean())
        if scale == 0 or np.linalg.norm(e) <= _REL_TOL * scale:
            return None  # constant, or fully explained by the covariates
    return _Residuals(ex, ey, basis)


def _correlation(ex: np.ndarray, ey: np.ndarray) -> float:
    return float(np.clip(ex @ ey / (np.linalg.norm(ex) * np.linalg.norm(ey)), -1.0, 1.0))


def _statistic(x: np.ndarray, y: np.ndarray, z: np.ndarray) -> float | None:
    r = _residuals(x, y, z)
    return None if r is None else _correlation(r.x, r.y)


def spearman(x: npt.ArrayLike, y: npt.ArrayLike) -> float | None:
    """Spearman rank correlation of x and y (ties get average ranks).

    None when undefined: fewer than 3 points, a constant input or a non-finite value.
    """
    xv, yv = _pair(x, y)
    return _statistic(xv, yv, np.zeros((xv.shape[0], 0)))


def partial_spearman(x: npt.ArrayLike, y: npt.ArrayLike, covariates: npt.ArrayLike) -> float | None:
    """Spearman correlation of x and y controlling for `covariates` (n, k): the Pearson correlation
    of the residuals of rank(x) and rank(y) after least-squares regression, with intercept, on the
    ranks of each covariate column. Constant columns are dropped (no columns: plain Spearman).

    None when undefined: too few points for the design (n < columns used + 3), a non-finite value,
    or rank(x) or rank(y) constant or fully explained by the covariates.
    """
    xv, yv = _pair(x, y)
    return _statistic(xv, yv, _matrix(covariates, xv.shape[0]))


def _permutations(rng: np.random.Generator, n: int, count: int, strata: np.ndarray | None) -> np.ndarray:
    """`count` permutations of range(n) as a (count, n) index array, moving points only within strata."""
    if strata is None:
        return rng.permuted(np.tile(np.arange(n), (count, 1)), axis=1)
    perms = np.tile(np.arange(n), (count, 1))
    for label in np.unique(strata):
        idx = np.flatnonzero(strata == label)
        perms[:, idx] = rng.permuted(np.tile(idx, (count, 1)), axis=1)
    return perms


def permutation_p_value(
    x: npt.ArrayLike,
    y: npt.ArrayLike,
    covariates: npt.ArrayLike | None = None,
    *,
    num_permutations: int = 2000,
    seed: int = 0,
    strata: npt.ArrayLike | None = None,
) -> float | None:
    """Two-sided permutation p-value of |spearman| (or |partial_spearman| given covariates).

    x is permuted (only within `strata` labels when given). For the partial statistic the residuals
    of rank(x) on the covariate ranks are permuted and residualised again (Freedman-Lane), so the
    relation of x to the design is kept and only the association beyond it is broken. Returns
    (1 + #{|stat_perm| >= |stat_obs|}) / (1 + num_permutations), or None when the statistic is
    undefined. Permutations whose statistic is undefined are left out of both counts.
    """
    xv, yv = _pair(x, y)
    n = xv.shape[0]
    z = _matrix(covariates, n)
    groups = _labels(strata, n, "strata")
    _positive(num_permutations, "num_permutations")
    r = _residuals(xv, yv, z)
    if r is None:
        return None
    ey = r.y / np.linalg.norm(r.y)
    observed = abs(_correlation(r.x, r.y))
    rng = np.random.default_rng(seed)
    extreme, valid = 0, 0
    for start in range(0, num_permutations, _BATCH):
        perms = _permutations(rng, n, min(_BATCH, num_permutations - start), groups)
        ex = _residualise(r.x[perms], r.basis)  # (b, n); a no-op without covariates
        norms = np.linalg.norm(ex, axis=1)
        ok = norms > _REL_TOL * np.linalg.norm(r.x)
        stat = np.abs(ex[ok] @ ey) / norms[ok]
        extreme += int((stat >= observed - _TIE_TOL).sum())
        valid += int(ok.sum())
    return (1 + extreme) / (1 + valid)


def _resample(rng: np.random.Generator, n: int, clusters: np.ndarray | None) -> np.ndarray:
    """Indices of one bootstrap resample: n points, or as many whole clusters as there are."""
    if clusters is None:
        return rng.integers(0, n, n)
    members = [np.flatnonzero(clusters == c) for c in np.unique(clusters)]
    chosen = rng.integers(0, len(members), len(members))
    return np.concatenate([members[i] for i in chosen])


def bootstrap_ci(
    x: npt.ArrayLike,
    y: npt.ArrayLike,
    covariates: npt.ArrayLike | None = None,
    *,
    num_resamples: int = 2000,
    level: float = 0.95,
    seed: int = 0,
    clusters: npt.ArrayLike | None = None,
) -> tuple[float | None, float | None]:
    """Percentile bootstrap confidence interval of spearman (or partial_spearman given covariates).

    Resamples points with replacement, or whole clusters when `clusters` labels are given (points
    that are not independent, e.g. runs that share a design cell). Resamples where the statistic is
    undefined are skipped; (None, None) when none is defined.
    """
    xv, yv = _pair(x, y)
    n = xv.shape[0]
    z = _matrix(covariates, n)
    groups = _labels(clusters, n, "clusters")
    _positive(num_resamples, "num_resamples")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if n == 0:
        return None, None
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(num_resamples):
        idx = _resample(rng, n, groups)
        value = _statistic(xv[idx], yv[idx], z[idx])
        if value is not None:
            values.append(value)
    if not values:
        return None, None
    lo, hi = np.quantile(values, [(1.0 - level) / 2.0, (1.0 + level) / 2.0])
    return float(lo), float(hi)


def _or_none(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def rank_association(
    x: npt.ArrayLike,
    y: npt.ArrayLike,
    covariates: npt.ArrayLike | None = None,
    *,
    strata: npt.ArrayLike | None = None,
    clusters: npt.ArrayLike | None = None,
    num_permutations: int = 2000,
    num_resamples: int = 2000,
    seed: int = 0,
) -> dict[str, Any]:
    """Spearman and partial Spearman correlations of x and y with bootstrap CIs and permutation
    p-values, as one JSON-able dict (None where undefined).

    Points where x, y or a covariate is not finite are dropped first, so both statistics use the
    same points. Keys: n, spearman, spearman_ci, spearman_p_value, partial_spearman,
    partial_spearman_ci, partial_spearman_p_value, controls (covariate columns used: those not
    constant on the kept points). Without covariates the partial entries are None.
    """
    xv, yv = _pair(x, y)
    n = xv.shape[0]
    z = _matrix(covariates, n)
    strata_v, clusters_v = _labels(strata, n, "strata"), _labels(clusters, n, "clusters")
    keep = np.isfinite(xv) & np.isfinite(yv) & np.isfinite(z).all(axis=1)
    xv, yv, z = xv[keep], yv[keep], z[keep]
    strata_v = None if strata_v is None else strata_v[keep]
    clusters_v = None if clusters_v is None else clusters_v[keep]
    design_sets = {"spearman": z[:, :0]}
    if covariates is not None:
        design_sets["partial_spearman"] = z
    result: dict[str, Any] = {"n": int(keep.sum())}
    for key in ("spearman", "partial_spearman"):
        if key not in design_sets:
            result.update({key: None, f"{key}_ci": [None, None], f"{key}_p_value": None})
            continue
        zk = design_sets[key]
        value = _statistic(xv, yv, zk)
        lo, hi = bootstrap_ci(xv, yv, zk, num_resamples=num_resamples, seed=seed, clusters=clusters_v)
        p = permutation_p_value(xv, yv, zk, num_permutations=num_permutations, seed=seed, strata=strata_v)
        result.update({key: _or_none(value), f"{key}_ci": [_or_none(lo), _or_none(hi)],
                       f"{key}_p_value": _or_none(p)})
    result["controls"] = int(_used_columns(z).shape[1]) if covariates is not None else 0
    return result


# ---- matrices over nets: the Mantel test and same- vs cross-group similarity ---------------------
#
# Entries (i, j) of a matrix over m nets are not independent observations: every pair that shares
# net i shares whatever is peculiar to net i. The permutation tests below therefore permute net
# labels (rows and columns together, or the label vector), which keeps that dependence intact
# under the null, instead of permuting entries.

MANTEL_METHODS = ("spearman", "pearson")
ALTERNATIVES = ("two-sided", "greater", "less")


def _square(a: npt.ArrayLike, name: str) -> np.ndarray:
    v = np.asarray(a, dtype=np.float64)
    if v.ndim != 2 or v.shape[0] != v.shape[1] or v.shape[0] < 2:
        raise ValueError(f"{name} must be a square (m, m) matrix with m >= 2, got shape {v.shape}")
    return v


def _choice(value: str, allowed: tuple[str, ...], name: str) -> None:
    if value not in allowed:
        raise ValueError(f"unknown {name} {value!r}; choose one of {', '.join(allowed)}")


def is_symmetric(a: npt.ArrayLike) -> bool:
    """Whether a square matrix equals its transpose (np.allclose) where both entries are finite."""
    v = _square(a, "matrix")
    both = np.isfinite(v) & np.isfinite(v.T)
    return bool(np.allclose(v[both], v.T[both]))


def _pair_index(m: int, symmetric: bool) -> tuple[np.ndarray, np.ndarray]:
    """Row and column indices of the pairs of distinct nets: the upper triangle (unordered pairs)
    when symmetric, else every off-diagonal entry (ordered pairs)."""
    if symmetric:
        return np.triu_indices(m, 1)
    return np.nonzero(~np.eye(m, dtype=bool))


def _rank_rows(v: np.ndarray) -> np.ndarray:
    """Average ranks within each row among its finite entries; non-finite entries stay NaN."""
    ok = np.isfinite(v)
    ranks = stats.rankdata(np.where(ok, v, np.inf), axis=1)  # inf ranks above every finite entry
    return np.where(ok, ranks, np.nan)


def _centred(w: np.ndarray, ok: np.ndarray) -> np.ndarray:
    """Rows of w minus their mean over the `ok` entries, 0 elsewhere."""
    w0 = np.where(ok, w, 0.0)
    mean = w0.sum(axis=1, keepdims=True) / np.maximum(ok.sum(axis=1, keepdims=True), 1)
    return np.where(ok, w0 - mean, 0.0)


def _row_pearson(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """(b,) Pearson correlation of each row pair over the entries finite in both; NaN when fewer
    than 3 such entries or a row is constant on them."""
    ok = np.isfinite(u) & np.isfinite(v)
    cu, cv = _centred(u, ok), _centred(v, ok)
    nu, nv = np.linalg.norm(cu, axis=1), np.linalg.norm(cv, axis=1)
    scale_u = np.linalg.norm(np.where(ok, u, 0.0), axis=1)  # constant rows centre to rounding noise
    scale_v = np.linalg.norm(np.where(ok, v, 0.0), axis=1)
    good = (ok.sum(axis=1) >= 3) & (nu > _REL_TOL * scale_u) & (nv > _REL_TOL * scale_v)
    out = np.full(u.shape[0], np.nan)
    out[good] = np.clip(np.sum(cu * cv, axis=1)[good] / (nu[good] * nv[good]), -1.0, 1.0)
    return out


def _row_correlation(u: np.ndarray, v: np.ndarray, method: str) -> np.ndarray:
    """(b,) Spearman or Pearson correlation of each row pair, entries non-finite in either dropped."""
    ok = np.isfinite(u) & np.isfinite(v)
    u, v = np.where(ok, u, np.nan), np.where(ok, v, np.nan)
    if method == "spearman":
        u, v = _rank_rows(u), _rank_rows(v)
    return _row_pearson(u, v)


def _extreme(values: np.ndarray, observed: float, alternative: str) -> int:
    """How many permutation statistics are at least as extreme as the observed one."""
    if alternative == "two-sided":
        return int((np.abs(values) >= abs(observed) - _TIE_TOL).sum())
    if alternative == "greater":
        return int((values >= observed - _TIE_TOL).sum())
    return int((values <= observed + _TIE_TOL).sum())


def mantel_test(
    a: npt.ArrayLike,
    b: npt.ArrayLike,
    *,
    method: str = "spearman",
    num_permutations: int = 2000,
    seed: int = 0,
    symmetric: bool | None = None,
    alternative: str = "two-sided",
) -> dict[str, Any]:
    """Mantel test: the correlation of two (m, m) matrices over the same m nets (e.g. a similarity
    matrix and an adversarial transfer matrix), with a permutation p-value over net labels.

    The statistic is the Spearman (or Pearson) correlation over pairs of distinct nets (the
    diagonal is ignored): the unordered pairs of the upper triangle when both matrices are
    symmetric, else all m(m - 1) ordered off-diagonal pairs. `symmetric=None` detects it
    (`is_symmetric` of both); True forces the upper triangle. Pairs that share a net are not
    independent, so the null permutes the nets of b (its rows and columns together) rather than the
    pairs. Entries that are not finite in either matrix are dropped, after each permutation too.

    Returns {"statistic", "p_value", "pairs" (pairs used), "nets": m, "method", "symmetric",
    "alternative"}; p_value is (1 + #{permuted statistic at least as extreme}) / (1 + #valid
    permutations), two-sided on |statistic| by default ("greater"/"less": one-sided). statistic and
    p_value are None when undefined (fewer than 3 pairs or a constant matrix on them).
    """
    av, bv = _square(a, "a"), _square(b, "b")
    if av.shape != bv.shape:
        raise ValueError(f"a and b must have the same shape, got {av.shape} and {bv.shape}")
    _choice(method, MANTEL_METHODS, "method")
    _choice(alternative, ALTERNATIVES, "alternative")
    _positive(num_permutations, "num_permutations")
    m = av.shape[0]
    sym = bool(symmetric) if symmetric is not None else is_symmetric(av) and is_symmetric(bv)
    i, j = _pair_index(m, sym)
    pairs_a = av[i, j][None]
    observed = float(_row_correlation(pairs_a, bv[i, j][None], method)[0])
    result: dict[str, Any] = {"statistic": None, "p_value": None,
                              "pairs": int((np.isfinite(pairs_a[0]) & np.isfinite(bv[i, j])).sum()),
                              "nets": m, "method": method, "symmetric": sym, "alternative": alternative}
    if not np.isfinite(observed):
        return result
    rng = np.random.default_rng(seed)
    extreme, valid = 0, 0
    for start in range(0, num_permutations, _BATCH):
        perms = _permutations(rng, m, min(_BATCH, num_permutations - start), None)  # (batch, m)
        permuted = bv[perms[:, i], perms[:, j]]  # pair (i, j) of b relabelled: (perm[i], perm[j])
        values = _row_correlation(np.broadcast_to(pairs_a, permuted.shape), permuted, method)
        ok = np.isfinite(values)
        extreme += _extreme(values[ok], observed, alternative)
        valid += int(ok.sum())
    result.update(statistic=observed, p_value=(1 + extreme) / (1 + valid))
    return result


def _group_means(values: np.ndarray, codes: np.ndarray, i: np.ndarray, j: np.ndarray, num_labels: int
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Mean and count of the finite pair values within and across labels, for each row of label
    codes (b, m): (same_mean, cross_mean, same_count, cross_count), each (b, 1 + num_labels).
    Column 0 is all pairs; column 1 + k the pairs with at least one net of label k (same: both)."""
    ok = np.isfinite(values)
    v = np.where(ok, values, 0.0)
    li, lj = codes[:, i], codes[:, j]  # (b, p)
    k = np.arange(num_labels)[None, :, None]
    in_i, in_j = li[:, None, :] == k, lj[:, None, :] == k  # (b, K, p)
    same = np.concatenate([(li == lj)[:, None], in_i & in_j], axis=1) & ok
    cross = np.concatenate([(li != lj)[:, None], in_i ^ in_j], axis=1) & ok
    same_n, cross_n = same.sum(axis=2), cross.sum(axis=2)
    with np.errstate(invalid="ignore", divide="ignore"):
        same_mean = np.where(same_n > 0, (same * v).sum(axis=2) / same_n, np.nan)
        cross_mean = np.where(cross_n > 0, (cross * v).sum(axis=2) / cross_n, np.nan)
    return same_mean, cross_mean, same_n, cross_n


def group_difference_test(
    matrix: npt.ArrayLike,
    labels: npt.ArrayLike,
    *,
    num_permutations: int = 2000,
    seed: int = 0,
    symmetric: bool | None = None,
    alternative: str = "two-sided",
) -> dict[str, Any]:
    """Are nets of the same label (e.g. architecture) more similar to each other than to the rest?

    For an (m, m) similarity matrix over nets with `labels` (m,), the statistic is the mean
    similarity of same-label pairs minus that of cross-label pairs, overall and per label (pairs
    of two nets of that label vs pairs of one net of it and one of another). Pairs are those of
    `mantel_test` (upper triangle when symmetric, detected when None; the diagonal ignored;
    non-finite entries dropped). The p-values permute the label vector over the nets, which keeps
    the dependence between pairs that share a net; two-sided on |difference| by default.

    Returns {"statistic", "p_value", "same_mean", "cross_mean", "same_pairs", "cross_pairs",
    "nets", "symmetric", "alternative", "per_label": {str(label): {the same six keys}}}; values
    are None where undefined (no same- or no cross-label pair, e.g. a label with one net).
    """
    mat = _square(matrix, "matrix")
    m = mat.shape[0]
    names, codes = np.unique(_labels(labels, m, "labels"), return_inverse=True)
    _choice(alternative, ALTERNATIVES, "alternative")
    _positive(num_permutations, "num_permutations")
    sym = bool(symmetric) if symmetric is not None else is_symmetric(mat)
    i, j = _pair_index(m, sym)
    values = mat[i, j]
    same_mean, cross_mean, same_n, cross_n = (x[0] for x in _group_means(values, codes[None], i, j, len(names)))
    observed = same_mean - cross_mean  # (1 + K,)
    rng = np.random.default_rng(seed)
    extreme, valid = np.zeros(len(observed), int), np.zeros(len(observed), int)
    for start in range(0, num_permutations, _BATCH):
        perms = _permutations(rng, m, min(_BATCH, num_permutations - start), None)
        s_mean, c_mean, _, _ = _group_means(values, codes[perms], i, j, len(names))
        diffs = s_mean - c_mean  # (batch, 1 + K)
        for c in range(len(observed)):
            ok = np.isfinite(diffs[:, c])
            if np.isfinite(observed[c]):
                extreme[c] += _extreme(diffs[ok, c], float(observed[c]), alternative)
            valid[c] += int(ok.sum())

    def summary(c: int) -> dict[str, Any]:
        defined = bool(np.isfinite(observed[c]))
        return {"statistic": float(observed[c]) if defined else None,
                "p_value": (1 + int(extreme[c])) / (1 + int(valid[c])) if defined else None,
                "same_mean": _or_none(float(same_mean[c])), "cross_mean": _or_none(float(cross_mean[c])),
                "same_pairs": int(same_n[c]), "cross_pairs": int(cross_n[c])}

    return {**summary(0), "nets": m, "symmetric": sym, "alternative": alternative,
            "per_label": {str(name): summary(1 + k) for k, name in enumerate(names)}}


def sign_flip_test(differences: npt.ArrayLike, *, num_permutations: int = 10000, seed: int = 0) -> float | None:
    """Two-sided p-value of mean(differences) = 0 for paired differences: under the null each
    difference is as likely to have either sign, so the signs are flipped at random (exact over all
    2^n flips when there are at most 16 differences). None for fewer than 2 finite differences."""
    d = np.asarray(differences, np.float64)
    d = d[np.isfinite(d)]
    if len(d) < 2:
        return None
    _positive(num_permutations, "num_permutations")
    if len(d) <= 16:
        signs = 1.0 - 2.0 * ((np.arange(2 ** len(d))[:, None] >> np.arange(len(d))) & 1)
        null = np.abs((signs * d).mean(axis=1))
        return float(np.mean(null >= abs(d.mean()) - 1e-12))
    signs = np.random.default_rng(seed).choice([-1.0, 1.0], size=(num_permutations, len(d)))
    null = np.abs((signs * d).mean(axis=1))
    return float((1 + np.sum(null >= abs(d.mean()) - 1e-12)) / (1 + num_permutations))
