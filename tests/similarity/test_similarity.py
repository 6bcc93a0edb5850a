"""Similarity indices and linear maps: closed forms, invariances, and independent numpy references."""

import jax
import numpy as np
import pytest
import scipy.linalg
from scipy.spatial.distance import pdist, squareform
from scipy.stats import ortho_group

from anatomy_jax.similarity import (cca, fit_linear_map, fit_ridge_cv, gram_path, linear_cka, minibatch_linear_cka,
                                    orthogonal_procrustes, procrustes_distance, pwcca, r2_score, rbf_cka,
                                    reduce_dimension, row_factor, svcca)
from anatomy_jax.similarity.cka import _linear_cka

RNG = np.random.default_rng(0)
X = RNG.normal(size=(300, 20)).astype(np.float32)
Y = (X @ RNG.normal(size=(20, 12)) + RNG.normal(size=(300, 12))).astype(np.float32)  # related to X, noisy
Q = ortho_group.rvs(20, random_state=1).astype(np.float32)
A = (RNG.normal(size=(20, 20)) + 3 * np.eye(20)).astype(np.float32)  # invertible, not orthogonal


def numpy_hsic_biased(k, l):
    n = k.shape[0]
    h = np.eye(n) - np.ones((n, n)) / n
    return np.trace(k @ h @ l @ h) / (n - 1) ** 2


def numpy_hsic_unbiased(k, l):  # Song et al. (2012), eq. 5, written out independently
    n = k.shape[0]
    kt, lt = k - np.diag(np.diag(k)), l - np.diag(np.diag(l))
    one = np.ones(n)
    return (np.trace(kt @ lt) + (one @ kt @ one) * (one @ lt @ one) / ((n - 1) * (n - 2))
            - 2 / (n - 2) * one @ kt @ lt @ one) / (n * (n - 3))


def numpy_cka(x, y, hsic):
    x, y = x.astype(np.float64), y.astype(np.float64)
    k, l = x @ x.T, y @ y.T
    return hsic(k, l) / np.sqrt(hsic(k, k) * hsic(l, l))


def test_linear_cka_closed_form_and_invariances():
    assert float(linear_cka(X, X)) == pytest.approx(1.0, abs=1e-5)
    assert float(linear_cka(X, Y)) == pytest.approx(numpy_cka(X, Y, numpy_hsic_biased), abs=1e-5)
    assert float(linear_cka(X, Y, debiased=True)) == pytest.approx(numpy_cka(X, Y, numpy_hsic_unbiased), abs=1e-4)
    base = float(linear_cka(X, Y))
    assert float(linear_cka(3.5 * X @ Q + 2.0, Y)) == pytest.approx(base, abs=1e-5)  # rotation, scale, shift
    assert abs(float(linear_cka(X @ A, Y)) - base) > 1e-2  # not invariant to general invertible maps
    assert float(linear_cka(X, RNG.normal(size=(300, 12)).astype(np.float32))) < 0.2
    with pytest.raises(ValueError, match="share the example axis"):
        linear_cka(X, Y[:100])


def test_rbf_cka_is_one_on_itself_and_rotation_invariant():
    assert float(rbf_cka(X, X)) == pytest.approx(1.0, abs=1e-5)
    assert float(rbf_cka(X @ Q, Y)) == pytest.approx(float(rbf_cka(X, Y)), abs=1e-4)
    assert 0.0 < float(rbf_cka(X, Y)) < 1.0


def test_minibatch_cka_converges_to_the_full_debiased_estimate():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(4000, 30)).astype(np.float32)
    y = (x[:, :10] @ rng.normal(size=(10, 15)) + rng.normal(size=(4000, 15))).astype(np.float32)
    full = float(linear_cka(x, y, debiased=True))
    errors = [abs(float(minibatch_linear_cka(x, y, b, jax.random.key(0))) - full) for b in (50, 1000)]
    assert errors[1] < 0.02 and errors[1] < errors[0] + 0.005


def numpy_canonical_correlations(x, y):
    x, y = x.astype(np.float64) - x.mean(0), y.astype(np.float64) - y.mean(0)
    cxx, cyy, cxy = x.T @ x, y.T @ y, x.T @ y
    m = np.linalg.inv(scipy.linalg.sqrtm(cxx)) @ cxy @ np.linalg.inv(scipy.linalg.sqrtm(cyy))
    return np.linalg.svd(np.real(m), compute_uv=False)


def test_cca_matches_numpy_and_is_exact_for_invertible_maps():
    np.testing.assert_allclose(cca(X, Y), numpy_canonical_correlations(X, Y), atol=1e-4)
    rho = np.asarray(cca(X, X @ A))
    assert rho.shape == (20,) and np.abs(rho - 1.0).max() <= 1e-4
    np.testing.assert_allclose(cca(X @ A + 1.0, Y), cca(X, Y), atol=1e-4)
    with pytest.raises(ValueError, match="more examples"):
        cca(X[:15], Y[:15])


def test_svcca_and_pwcca_invariance_and_range():
    assert float(svcca(X, X @ A)) == pytest.approx(1.0, abs=1e-4)
    assert float(pwcca(X, X @ A)) == pytest.approx(1.0, abs=1e-4)
    # PWCCA weighs by x's neurons, so it is invariant to invertible maps of y (not of x)
    B = (RNG.normal(size=(12, 12)) + 3 * np.eye(12)).astype(np.float32)
    assert float(pwcca(X, Y @ B + 1.0)) == pytest.approx(float(pwcca(X, Y)), abs=1e-4)
    # keeping every direction, SVCCA is plain mean CCA: invariant to invertible maps of both
    assert float(svcca(X @ A, Y @ B, variance=1.0)) == pytest.approx(float(svcca(X, Y, variance=1.0)), abs=1e-4)
    noise = RNG.normal(size=(300, 12)).astype(np.float32)
    assert 0.0 < float(pwcca(X, noise)) < float(pwcca(X, Y)) < 1.0
    assert float(svcca(X, noise)) < float(svcca(X, Y))


def test_linear_fit_recovers_a_planted_map():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(2000, 40)).astype(np.float32)
    w_true = rng.normal(size=(40, 25)).astype(np.float32)
    signal = x @ w_true + 0.7
    noise = 0.5 * rng.normal(size=signal.shape).astype(np.float32)
    w, b = fit_linear_map(x, signal + noise)
    assert np.abs(np.asarray(w) - w_true).max() < 0.06 and np.abs(np.asarray(b) - 0.7).max() < 0.06
    noise_share = noise.var() / (signal + noise).var()
    r2 = float(r2_score(signal + noise, x @ w + b))
    assert r2 == pytest.approx(1 - noise_share, abs=0.01)
    # ridge -> 0 equals numpy's least squares (with an intercept column)
    lstsq = np.linalg.lstsq(np.c_[x, np.ones(len(x))].astype(np.float64), signal + noise, rcond=None)[0]
    w0, b0 = fit_linear_map(x, signal + noise, ridge=1e-6)
    np.testing.assert_allclose(w0, lstsq[:-1], atol=1e-4)
    np.testing.assert_allclose(b0, lstsq[-1], atol=1e-4)
    # heavy ridge shrinks the map
    w_big, _ = fit_linear_map(x, signal + noise, ridge=1e6)
    assert np.linalg.norm(w_big) < 0.1 * np.linalg.norm(w)
    with pytest.raises(ValueError, match="ridge must be"):
        fit_linear_map(x, signal, ridge=-1.0)


def test_ridge_cross_validation_prefers_regularisation_when_p_is_close_to_n():
    rng = np.random.default_rng(6)
    w5 = rng.normal(size=(5, 10)).astype(np.float32)
    x, xv = rng.normal(size=(150, 120)).astype(np.float32), rng.normal(size=(500, 120)).astype(np.float32)
    y = (x[:, :5] @ w5 + 2.0 * rng.normal(size=(150, 10))).astype(np.float32)
    yv = (xv[:, :5] @ w5 + 2.0 * rng.normal(size=(500, 10))).astype(np.float32)
    _, _, chosen, scores = fit_ridge_cv(x, y, xv, yv)
    assert chosen > 0 and max(scores.values()) > scores[0.0] + 0.1


def test_procrustes_recovers_a_rotation_and_its_distance_is_zero():
    r = np.asarray(orthogonal_procrustes(X, X @ Q))
    np.testing.assert_allclose(r, Q, atol=1e-4)
    assert float(procrustes_distance(X, 2.0 * X @ Q + 5.0)) < 1e-4
    assert float(procrustes_distance(X, X @ A)) > 0.01
    assert 0.0 <= float(procrustes_distance(X, Y)) <= 2.0


# --- wide representations, float32 offsets, references -------------------------------------------------------------

def relu_pair(n, p, q, seed):
    """Two related ReLU representations (float64, no offset): y sees rescaled columns of x's
    pre-activations (cycled when q > p) plus noise."""
    rng = np.random.default_rng(seed)
    g = rng.normal(size=(n, p)) + rng.normal(size=(n, 8)) @ rng.normal(size=(8, p)) / 2
    x = np.maximum(g, 0.0)
    y = np.maximum(g[:, np.arange(q) % p] * rng.uniform(0.5, 2.0, q) + 4.0 * rng.normal(size=(n, q)), 0.0)
    return x, y


def numpy_minibatch_cka(x, y, order):
    stats = np.array([[numpy_hsic_unbiased(k, l) for k, l in ((kb, lb), (kb, kb), (lb, lb))]
                      for kb, lb in ((x[i] @ x[i].T, y[i] @ y[i].T) for i in order)]).mean(axis=0)
    return stats[0] / np.sqrt(stats[1] * stats[2])


@pytest.mark.parametrize("n,p,q", [(256, 1500, 1200), (2000, 24, 16)])  # Gram path; feature path
def test_cka_of_offset_relu_features_matches_the_float64_unoffset_value(n, p, q):
    x, y = relu_pair(n, p, q, seed=11)
    assert gram_path(n, p, q) == (p > n)
    xo, yo = (x + 20.0).astype(np.float32), (y + 20.0).astype(np.float32)  # ReLU + 20, float32
    for debiased, hsic in ((False, numpy_hsic_biased), (True, numpy_hsic_unbiased)):
        reference = numpy_cka(x - x.mean(0), y - y.mean(0), hsic)  # float64, centred, no offset
        assert float(linear_cka(xo, yo, debiased=debiased)) == pytest.approx(reference, abs=1e-4)
    key = jax.random.key(4)
    order = np.asarray(jax.random.permutation(key, n))[: (n // 64) * 64].reshape(-1, 64)
    reference = numpy_minibatch_cka(x, y, order)  # the unbiased estimator is translation invariant
    assert float(minibatch_linear_cka(xo, yo, 64, key)) == pytest.approx(reference, abs=1e-4)


def test_gram_path_equals_feature_path():
    for n, p, q in ((200, 50, 30), (120, 300, 90)):
        x, y = relu_pair(n, p, q, seed=n)
        x, y = (x + 3.0).astype(np.float32), y.astype(np.float32)
        for debiased in (False, True):
            feature, gram = (float(_linear_cka(x, y, debiased, path)) for path in (False, True))
            assert feature == pytest.approx(gram, abs=1e-5)
    assert gram_path(2000, 32768, 32768) and not gram_path(300, 20, 12)


def numpy_procrustes(x, y):
    """The direct formula: 2 - 2 ||x^T y||_* of the centred, unit-norm x, y (forms p x q)."""
    x, y = x - x.mean(0), y - y.mean(0)
    x, y = x / np.linalg.norm(x), y / np.linalg.norm(y)
    return 2.0 - 2.0 * np.linalg.svd(x.T @ y, compute_uv=False).sum()


@pytest.mark.parametrize("n,p,q", [(40, 100, 70), (60, 30, 90), (80, 20, 10)])  # both wide; one wide; narrow
def test_procrustes_distance_from_thin_factors_equals_the_direct_formula(n, p, q):
    x, y = relu_pair(n, p, q, seed=p)
    x32, y32 = (x + 20.0).astype(np.float32), (y + 20.0).astype(np.float32)
    direct = numpy_procrustes(x, y)
    assert 0.05 < direct < 2.0
    assert float(procrustes_distance(x32, y32)) == pytest.approx(direct, abs=2e-5)
    rotated = (x @ ortho_group.rvs(p, random_state=2) + 20.0).astype(np.float32)  # rotating x changes nothing
    assert float(procrustes_distance(rotated, y32)) == pytest.approx(direct, abs=2e-5)
    b = np.asarray(row_factor(x32 - x32.mean(0)), np.float64)
    assert b.shape == (n, min(n, p))
    np.testing.assert_allclose(b @ b.T, (x - x.mean(0)) @ (x - x.mean(0)).T, rtol=0, atol=1e-3 * p)


def numpy_pwcca_reference(x, y):
    """A numpy port of google/svcca's `compute_pwcca` (acts as neurons x examples) with the
    canonical directions of its `cca_core` (`cca_dirns1`: coefficients times invsqrt_xx times the
    centred neurons, means added back); weights sum_j |<P_i, neuron_j>| over x's neurons, P the
    orthonormalised directions (QR), normalised to sum 1. x must have no more neurons than y."""
    acts1, acts2 = x.T, y.T
    nx = acts1.shape[0]
    assert nx <= acts2.shape[0]
    cov = np.cov(acts1, acts2)
    sxx, sxy, syy = cov[:nx, :nx], cov[:nx, nx:], cov[nx:, nx:]
    xmax, ymax = np.abs(sxx).max(), np.abs(syy).max()
    sxx, syy, sxy = sxx / xmax, syy / ymax, sxy / np.sqrt(xmax * ymax)

    def invsqrt(c):
        w, v = np.linalg.eigh(np.linalg.pinv(c))
        return v @ np.diag(np.sqrt(w)) @ v.T

    ixx, iyy = invsqrt(sxx), invsqrt(syy)
    u, rho, _ = np.linalg.svd(ixx @ sxy @ iyy)
    means = acts1.mean(axis=1, keepdims=True)
    dirns = u.T @ ixx @ (acts1 - means) + means
    p_dirns, _ = np.linalg.qr(dirns.T)
    weights = np.abs(p_dirns.T @ acts1.T).sum(axis=1)
    return np.sum(weights / weights.sum() * rho[: len(weights)]), (u, ixx)


def test_pwcca_matches_a_numpy_port_of_the_reference_with_unequal_neuron_scales():
    rng = np.random.default_rng(8)
    n, p, q = 600, 10, 16
    x = rng.normal(size=(n, p)) * np.geomspace(0.05, 20.0, p)  # neurons of very different scales
    y = np.c_[x[:, :6] @ rng.normal(size=(6, 8)), rng.normal(size=(n, 8))] + 0.5 * rng.normal(size=(n, q))
    x, y = x - x.mean(0), y - y.mean(0)  # the reference adds means back to its directions; ours is centred
    reference, (u, ixx) = numpy_pwcca_reference(x, y)
    ours = float(pwcca(x.astype(np.float32), y.astype(np.float32)))
    assert ours == pytest.approx(reference, abs=1e-4)
    assert float(pwcca((x + 20.0).astype(np.float32), (y - 7.0).astype(np.float32))) == pytest.approx(ours, abs=1e-4)
    # the weights matter: an unweighted mean, or directions not whitened by invsqrt_xx (as
    # compute_pwcca's own `coef_x @ acts` is), land elsewhere
    assert abs(float(cca(x, y).mean()) - reference) > 0.01
    unwhitened = np.linalg.qr((u.T @ x.T).T)[0]
    w = np.abs(unwhitened.T @ x).sum(axis=1)
    rho = numpy_canonical_correlations(x, y)[:p]
    assert abs(np.sum(w / w.sum() * rho) - reference) > 0.01


def numpy_svcca(x, y, variance=None, dims=None):
    def reduce(a):
        a = a - a.mean(0)
        u, s, _ = np.linalg.svd(a, full_matrices=False)
        k = dims if dims is not None else int(np.searchsorted(np.cumsum(s ** 2) / np.sum(s ** 2), variance)) + 1
        return u[:, :k] * s[:k]

    return numpy_canonical_correlations(reduce(x), reduce(y)).mean()


def test_svcca_and_pwcca_on_wide_representations_reduce_first():
    rng = np.random.default_rng(9)
    n, p, q = 400, 900, 700  # wider than n: reduced through thin QRs
    z = rng.normal(size=(n, 12)) * np.geomspace(1.0, 6.0, 12)
    x = z @ rng.normal(size=(12, p)) + 0.3 * rng.normal(size=(n, p)) + 20.0
    y = z[:, :8] @ rng.normal(size=(8, q)) + rng.normal(size=(n, 4)) @ rng.normal(size=(4, q)) \
        + 0.3 * rng.normal(size=(n, q)) + 20.0
    x32, y32 = x.astype(np.float32), y.astype(np.float32)
    for variance in (0.9, 0.97):
        assert float(svcca(x32, y32, variance=variance)) == pytest.approx(numpy_svcca(x, y, variance=variance),
                                                                         abs=2e-4)
    assert float(svcca(x32, y32, dims=30)) == pytest.approx(numpy_svcca(x, y, dims=30), abs=2e-4)
    assert reduce_dimension(x32, dims=30).shape == (n, 30)
    np.testing.assert_allclose(cca(x32, y32, dims=20), numpy_canonical_correlations(
        *(np.linalg.svd(a - a.mean(0), full_matrices=False)[0][:, :20] for a in (x, y))), atol=2e-4)
    assert 0.3 < float(pwcca(x32, y32, dims=20)) <= 1.0
    assert float(pwcca(x32, x32 * 3.0 - 1.0, dims=20)) == pytest.approx(1.0, abs=1e-4)


def test_cca_family_refuses_too_few_examples_for_the_kept_dimension():
    rng = np.random.default_rng(10)
    x, y = rng.normal(size=(300, 500)).astype(np.float32), rng.normal(size=(300, 400)).astype(np.float32)
    with pytest.raises(ValueError, match=r"more examples \(300\) than features \(500, 400\).*dims <= 30"):
        cca(x, y)
    with pytest.raises(ValueError, match=r"more examples .*dims <= 30"):
        pwcca(x, y)
    with pytest.raises(ValueError, match=r"dims=31 keeps 31 directions, but 300 examples support at most 30 "
                                         r"\(CCA needs n >= 10 x kept dimension\)"):
        svcca(x, y, dims=31)
    with pytest.raises(ValueError, match=r"variance=0.99 keeps \d+ directions, but 300 examples support at most 30"):
        svcca(x, y)  # white noise: 0.99 of the variance needs almost every direction
    with pytest.raises(ValueError, match="dims=40 keeps 40"):
        pwcca(x, y, dims=40)
    with pytest.raises(ValueError, match="dims must be a positive integer"):
        cca(x, y, dims=0)
    with pytest.raises(ValueError, match="exactly one of dims and variance"):
        reduce_dimension(x)
    assert cca(x, y, dims=30).shape == (30,)  # n = 10 x kept dimension is allowed


def test_rbf_cka_matches_numpy_with_the_median_bandwidth_rule():
    x, y = relu_pair(150, 40, 25, seed=12)
    for fraction in (0.3, 0.8):
        grams = [np.exp(-squareform(pdist(a, "sqeuclidean")) / (2 * (fraction * np.median(pdist(a))) ** 2))
                 for a in (x, y)]  # sigma: fraction x median distance over pairs i < j
        for debiased, hsic in ((False, numpy_hsic_biased), (True, numpy_hsic_unbiased)):
            reference = hsic(*grams) / np.sqrt(hsic(grams[0], grams[0]) * hsic(grams[1], grams[1]))
            ours = rbf_cka((x + 20.0).astype(np.float32), (y + 20.0).astype(np.float32), fraction, debiased)
            assert float(ours) == pytest.approx(reference, abs=1e-4)
