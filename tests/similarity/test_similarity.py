"""Similarity indices and linear maps: closed forms, invariances, and independent numpy references."""

import jax
import numpy as np
import pytest
import scipy.linalg
from scipy.stats import ortho_group

from anatomy_jax.similarity import (cca, fit_linear_map, fit_ridge_cv, linear_cka, minibatch_linear_cka,
                                    orthogonal_procrustes, procrustes_distance, pwcca, r2_score, rbf_cka, svcca)

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
