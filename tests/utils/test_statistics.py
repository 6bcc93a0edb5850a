"""Rank statistics: agreement with scipy, invariances, calibration of the permutation test, and
the bootstrap interval's behaviour."""

import json

import numpy as np
import pytest
from scipy import stats

from anatomy_jax.utils.statistics import (bootstrap_ci, partial_spearman, permutation_p_value, rank_association,
                                          spearman)


def _data(seed, n=60, k=2):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, k))
    x = z[:, 0] + rng.normal(size=n)
    y = z.sum(axis=1) + 0.5 * x + rng.normal(size=n)
    return x, y, z


def _precision_partial(x, y, z):
    """Independent reference: partial correlation from the inverse rank correlation matrix."""
    r = stats.spearmanr(np.column_stack([x, y, z])).statistic
    p = np.linalg.inv(r)
    return -p[0, 1] / np.sqrt(p[0, 0] * p[1, 1])


def _confounded(seed, levels=5, per_level=20):
    """x and y both follow a discrete design variable z and are independent given it."""
    rng = np.random.default_rng(seed)
    z = np.repeat(np.arange(levels, dtype=float), per_level)
    x = z + 0.1 * rng.normal(size=z.size)
    y = z + 0.1 * rng.normal(size=z.size)
    return x, y, z[:, None]


@pytest.mark.parametrize("seed,k", [(0, 1), (1, 2), (2, 3)])
def test_partial_spearman_matches_the_precision_matrix_formula(seed, k):
    x, y, z = _data(seed, k=k)
    x = np.round(x, 1)  # ties get average ranks in both
    assert partial_spearman(x, y, z) == pytest.approx(_precision_partial(x, y, z), abs=1e-10)


def test_without_covariates_partial_is_scipy_spearman():
    x, y, _ = _data(3)
    expected = stats.spearmanr(x, y).statistic
    assert spearman(x, y) == pytest.approx(expected, abs=1e-12)
    assert partial_spearman(x, y, np.zeros((x.size, 0))) == pytest.approx(expected, abs=1e-12)
    constant = np.ones((x.size, 2))  # constant columns are dropped
    assert partial_spearman(x, y, constant) == pytest.approx(expected, abs=1e-12)


def test_invariant_under_monotone_transforms():
    x, y, z = _data(4)
    assert spearman(np.exp(x), y) == pytest.approx(spearman(x, y), abs=1e-12)
    assert partial_spearman(np.exp(x), y ** 3, z * 5 - 2) == pytest.approx(partial_spearman(x, y, z), abs=1e-12)
    assert spearman(-x, y) == pytest.approx(-spearman(x, y), abs=1e-12)


@pytest.mark.parametrize("x,y", [
    ([1.0, 2.0], [2.0, 1.0]),
    ([1.0, 1.0, 1.0, 1.0], [1.0, 2.0, 3.0, 4.0]),
    ([1.0, np.nan, 3.0, 4.0], [1.0, 2.0, 3.0, 4.0]),
    ([1.0, np.inf, 3.0, 4.0], [1.0, 2.0, 3.0, 4.0]),
])
def test_undefined_statistics_are_none(x, y):
    assert spearman(x, y) is None
    assert partial_spearman(x, y, np.arange(len(x), dtype=float)[:, None]) is None
    assert permutation_p_value(x, y, num_permutations=10) is None


def test_partial_is_none_when_a_covariate_explains_x_or_the_design_is_too_large():
    x, y, z = _data(5, n=20)
    assert partial_spearman(x, y, np.column_stack([x ** 3, z])) is None  # rank(x) fully explained
    assert partial_spearman(x[:4], y[:4], z[:4]) is None  # 4 points, intercept + 2 columns
    assert partial_spearman(x[:5], y[:5], z[:5]) is not None


@pytest.mark.parametrize("args,message", [
    (([1, 2, 3], [1, 2]), "same length"),
    (([[1, 2, 3]], [1, 2, 3]), "one-dimensional"),
    (([1, 2, 3], [1, 2, 3], np.zeros((2, 1))), r"covariates must have shape \(3, k\)"),
])
def test_bad_shapes_raise(args, message):
    with pytest.raises(ValueError, match=message):
        partial_spearman(*args) if len(args) == 3 else spearman(*args)


def test_bad_settings_raise():
    x, y, _ = _data(6, n=10)
    with pytest.raises(ValueError, match="num_permutations must be a positive integer, got 0"):
        permutation_p_value(x, y, num_permutations=0)
    with pytest.raises(ValueError, match=r"level must be in \(0, 1\), got 1.5"):
        bootstrap_ci(x, y, level=1.5)
    with pytest.raises(ValueError, match=r"strata must have one label per point, shape \(10,\)"):
        permutation_p_value(x, y, strata=[0, 1])


def test_strong_monotone_relation_is_significant():
    rng = np.random.default_rng(7)
    x = rng.normal(size=40)
    y = np.exp(x) + 0.3 * rng.normal(size=40)
    p = permutation_p_value(x, y, num_permutations=999)
    assert p < 0.01 and p >= 1 / 1000  # never below the smallest attainable value


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_independent_data_is_not_significant(seed):
    rng = np.random.default_rng(seed)
    x, y, z = rng.normal(size=(3, 50))
    assert permutation_p_value(x, y, num_permutations=999, seed=seed) > 0.05
    assert permutation_p_value(x, y, z[:, None], num_permutations=999, seed=seed) > 0.05


@pytest.mark.parametrize("with_covariate", [False, True])
def test_p_values_are_roughly_uniform_under_the_null(with_covariate):
    """Over 300 independent data sets: P(p <= 0.05) ~ 0.05 and P(p <= 0.5) ~ 0.5 (binomial bounds
    of about 3.5 sigma), with a covariate that x depends on for the Freedman-Lane case."""
    rng = np.random.default_rng(11)
    ps = []
    for i in range(300):
        z = rng.normal(size=30)
        x = z + rng.normal(size=30)
        y = rng.normal(size=30)
        ps.append(permutation_p_value(x, y, z[:, None] if with_covariate else None, num_permutations=199, seed=i))
    ps = np.array(ps)
    assert 0.01 <= (ps <= 0.05).mean() <= 0.095
    assert 0.40 <= (ps <= 0.5).mean() <= 0.60


def test_association_only_through_a_covariate():
    x, y, z = _confounded(0)
    result = rank_association(x, y, z, num_permutations=999, num_resamples=300)
    assert result["spearman"] > 0.9 and result["spearman_p_value"] < 0.01
    assert abs(result["partial_spearman"]) < 0.2 and result["partial_spearman_p_value"] > 0.05
    lo, hi = result["partial_spearman_ci"]
    assert lo < 0 < hi
    assert result["controls"] == 1 and result["n"] == x.size


def test_strata_keep_between_stratum_differences():
    """Permuting only within the design cells, the association that the cells explain is not
    evidence: plain p tiny, stratified p large."""
    x, y, z = _confounded(1)
    assert permutation_p_value(x, y, num_permutations=999) < 0.01
    assert permutation_p_value(x, y, num_permutations=999, strata=z[:, 0]) > 0.05


def test_bootstrap_interval_contains_the_estimate_and_narrows_with_more_data():
    widths = []
    for n in (40, 640):
        rng = np.random.default_rng(n)
        x = rng.normal(size=n)
        y = x + 1.5 * rng.normal(size=n)
        lo, hi = bootstrap_ci(x, y, num_resamples=500)
        assert lo < spearman(x, y) < hi
        widths.append(hi - lo)
    assert widths[1] < 0.5 * widths[0]  # ~ 1/sqrt(n): 4x narrower expected


def test_cluster_bootstrap_counts_clusters_not_copies():
    """Ten independent points each copied 20 times: the cluster bootstrap sees 10 observations and
    gives a much wider interval than resampling the 200 copies as if independent."""
    rng = np.random.default_rng(8)
    x0 = rng.normal(size=10)
    y0 = x0 + rng.normal(size=10)
    x, y, cells = np.repeat(x0, 20), np.repeat(y0, 20), np.repeat(np.arange(10), 20)
    naive = bootstrap_ci(x, y, num_resamples=400)
    clustered = bootstrap_ci(x, y, num_resamples=400, clusters=cells)
    assert clustered[1] - clustered[0] > 2 * (naive[1] - naive[0])
    assert clustered[0] < spearman(x, y) < clustered[1]


def test_same_seed_same_numbers_and_json():
    x, y, z = _data(9)
    x[3], y[5] = np.nan, np.inf  # dropped, not propagated
    kwargs = dict(num_permutations=200, num_resamples=200, seed=3)
    a, b = rank_association(x, y, z, **kwargs), rank_association(x, y, z, **kwargs)
    assert a == b
    assert a != rank_association(x, y, z, **{**kwargs, "seed": 4})
    assert a["n"] == x.size - 2
    assert a["spearman"] == pytest.approx(spearman(np.delete(x, [3, 5]), np.delete(y, [3, 5])))
    json.dumps(a, allow_nan=False)
    assert set(a) == {"n", "spearman", "spearman_ci", "spearman_p_value", "partial_spearman",
                      "partial_spearman_ci", "partial_spearman_p_value", "controls"}


def test_rank_association_without_covariates_or_points():
    x, y, _ = _data(10)
    result = rank_association(x, y, num_permutations=50, num_resamples=50)
    assert result["partial_spearman"] is None and result["partial_spearman_ci"] == [None, None]
    assert result["controls"] == 0 and result["spearman"] is not None
    empty = rank_association([np.nan, 1.0], [1.0, 2.0], num_permutations=50, num_resamples=50)
    assert empty["n"] == 1 and empty["spearman"] is None and empty["spearman_p_value"] is None
    json.dumps(empty, allow_nan=False)


# ---- Mantel test and same- vs cross-label differences over nets ----------------------------------

import itertools  # noqa: E402

from anatomy_jax.utils.statistics import group_difference_test, is_symmetric, mantel_test  # noqa: E402


def _distances(rng, m, dim=2):
    """A symmetric (m, m) matrix with net-level structure: distances between random net embeddings
    (every pair that shares a net shares its embedding, as similarities of real nets do)."""
    u = rng.normal(size=(m, dim))
    return np.linalg.norm(u[:, None] - u[None], axis=-1)


def _off_diagonal(a):
    return a[~np.eye(len(a), dtype=bool)]


def test_mantel_statistic_is_scipy_on_the_pairs_and_detects_symmetry():
    rng = np.random.default_rng(0)
    a, b = _distances(rng, 8), _distances(rng, 8)
    iu = np.triu_indices(8, 1)
    sym = mantel_test(a, b, num_permutations=10)
    assert sym["symmetric"] and sym["pairs"] == 28 and sym["nets"] == 8
    assert sym["statistic"] == pytest.approx(stats.spearmanr(a[iu], b[iu]).statistic, abs=1e-12)
    pearson = mantel_test(a, b, method="pearson", num_permutations=10)
    assert pearson["statistic"] == pytest.approx(stats.pearsonr(a[iu], b[iu]).statistic, abs=1e-12)
    transfer = b + rng.uniform(size=(8, 8))  # asymmetric, like an adversarial transfer matrix
    asym = mantel_test(a, transfer, num_permutations=10)
    assert not asym["symmetric"] and asym["pairs"] == 56
    expected = stats.spearmanr(_off_diagonal(a), _off_diagonal(transfer)).statistic
    assert asym["statistic"] == pytest.approx(expected, abs=1e-12)
    forced = mantel_test(a, transfer, symmetric=True, num_permutations=10)
    assert forced["pairs"] == 28
    assert forced["statistic"] == pytest.approx(stats.spearmanr(a[iu], transfer[iu]).statistic, abs=1e-12)
    a_nan = a.copy()
    a_nan[1, 4] = a_nan[4, 1] = np.nan  # NaN is ignored by the detection and drops one pair
    assert is_symmetric(a_nan) and mantel_test(a_nan, b, num_permutations=10)["pairs"] == 27


def _net_effects(rng, m):
    """A symmetric (m, m) matrix whose pairs share per-net effects: u_i + u_j + noise."""
    u, noise = rng.normal(size=m), 0.3 * rng.normal(size=(m, m))
    return u[:, None] + u[None] + noise + noise.T


def test_mantel_p_value_is_uniformish_under_a_planted_null():
    iu = np.triu_indices(8, 1)
    p, naive = [], []
    for s in range(40):
        a, b = _net_effects(np.random.default_rng(100 + s), 8), _net_effects(np.random.default_rng(200 + s), 8)
        p.append(mantel_test(a, b, num_permutations=500, seed=s)["p_value"])
        naive.append(permutation_p_value(a[iu], b[iu], num_permutations=500, seed=s))
    assert np.mean(np.array(p) < 0.05) <= 0.15
    assert 0.3 < np.mean(p) < 0.7  # neither piled up near 0 nor near 1
    # Permuting pairs instead of nets ignores that pairs share nets: it rejects this null far too often.
    assert np.mean(np.array(naive) < 0.05) > 0.15


@pytest.mark.parametrize("symmetric", [True, False])
def test_mantel_p_value_is_small_for_a_planted_relation(symmetric):
    rng = np.random.default_rng(1)
    a = _distances(rng, 8)
    noise = 0.05 * rng.normal(size=(8, 8))
    b = np.exp(a) + (noise + noise.T if symmetric else noise)
    out = mantel_test(a, b, seed=3)
    assert out["symmetric"] is symmetric and out["statistic"] > 0.9 and out["p_value"] < 0.01
    assert mantel_test(a, -b, alternative="less")["p_value"] < 0.01
    assert mantel_test(a, -b, alternative="greater")["p_value"] > 0.99


def _exact_mantel_p(a, b, symmetric):
    """Independent reference: all m! relabellings of b, NaN pairs dropped after each, scipy's rho."""
    m = len(a)
    i, j = np.triu_indices(m, 1) if symmetric else np.nonzero(~np.eye(m, dtype=bool))

    def rho(bb):
        x, y = a[i, j], bb[i, j]
        keep = np.isfinite(x) & np.isfinite(y)
        return stats.spearmanr(x[keep], y[keep]).statistic

    observed = rho(b)
    perms = [list(p) for p in itertools.permutations(range(m))]
    return observed, np.mean([abs(rho(b[np.ix_(p, p)])) >= abs(observed) - 1e-12 for p in perms])


@pytest.mark.parametrize("symmetric", [True, False])
def test_mantel_drops_nan_pairs_after_each_permutation_like_exact_enumeration(symmetric):
    rng = np.random.default_rng(4)
    a = _distances(rng, 5)
    b = a + 0.6 * rng.normal(size=(5, 5))
    b = (b + b.T) / 2 if symmetric else b
    a[0, 1] = a[1, 0] = np.nan
    b[2, 3] = b[3, 2] = np.nan  # after relabelling this NaN lands on other pairs
    observed, exact = _exact_mantel_p(a, b, symmetric)
    out = mantel_test(a, b, num_permutations=20000, seed=5)
    assert out["pairs"] == (8 if symmetric else 16)
    assert out["statistic"] == pytest.approx(observed, abs=1e-12)
    assert out["p_value"] == pytest.approx(exact, abs=0.015)


def test_mantel_undefined_and_bad_inputs():
    constant = np.ones((5, 5))
    out = mantel_test(constant, _distances(np.random.default_rng(0), 5))
    assert out["statistic"] is None and out["p_value"] is None and json.dumps(out)
    with pytest.raises(ValueError, match="square"):
        mantel_test(np.ones((3, 4)), np.ones((3, 4)))
    with pytest.raises(ValueError, match="same shape"):
        mantel_test(np.ones((3, 3)), np.ones((4, 4)))
    with pytest.raises(ValueError, match="unknown method 'kendall'"):
        mantel_test(np.ones((3, 3)), np.ones((3, 3)), method="kendall")
    with pytest.raises(ValueError, match="num_permutations"):
        mantel_test(np.ones((3, 3)), np.ones((3, 3)), num_permutations=0)


def _planted_groups(seed, shift, per_label=4, labels=("resnet", "vgg", "cnn")):
    rng = np.random.default_rng(seed)
    names = np.repeat(np.array(labels), per_label)
    sim = _net_effects(rng, len(names)) + shift * (names[:, None] == names[None])
    np.fill_diagonal(sim, 1.0)
    return sim, names


def test_group_difference_means_match_a_loop_and_planted_groups_are_significant():
    sim, names = _planted_groups(0, shift=3.0)
    sim[0, 5] = sim[5, 0] = np.nan  # a missing cross pair is dropped
    out = group_difference_test(sim, names, seed=1)
    same = [sim[i, j] for i, j in itertools.combinations(range(12), 2) if names[i] == names[j]]
    cross = [sim[i, j] for i, j in itertools.combinations(range(12), 2)
             if names[i] != names[j] and np.isfinite(sim[i, j])]
    assert out["symmetric"] and out["same_pairs"] == 18 and out["cross_pairs"] == 47
    assert out["statistic"] == pytest.approx(np.mean(same) - np.mean(cross), abs=1e-12)
    assert out["p_value"] < 0.01 and json.dumps(out)
    vgg = np.flatnonzero(names == "vgg")
    vgg_same = [sim[i, j] for i, j in itertools.combinations(vgg, 2)]
    vgg_cross = [sim[i, j] for i in vgg for j in range(12) if names[j] != "vgg"]
    assert out["per_label"]["vgg"]["cross_pairs"] == 31  # 4 x 8 minus the missing one
    assert out["per_label"]["vgg"]["statistic"] == pytest.approx(np.mean(vgg_same) - np.nanmean(vgg_cross),
                                                                 abs=1e-12)
    assert all(v["statistic"] > 0 and v["p_value"] < 0.05 for v in out["per_label"].values())


def test_group_difference_is_uniformish_under_the_null_and_undefined_for_singletons():
    p = [group_difference_test(*_planted_groups(s, shift=0.0), num_permutations=500, seed=s)["p_value"]
         for s in range(40)]
    assert np.mean(np.array(p) < 0.05) <= 0.15 and 0.3 < np.mean(p) < 0.7
    sim, _ = _planted_groups(0, shift=0.0)
    out = group_difference_test(sim[:5, :5], np.array(["a", "a", "a", "a", "b"]), num_permutations=50)
    assert out["per_label"]["b"]["statistic"] is None and out["per_label"]["b"]["same_pairs"] == 0
    assert out["per_label"]["a"]["statistic"] is not None and out["statistic"] is not None
    with pytest.raises(ValueError, match="labels must have one label per point"):
        group_difference_test(sim, np.arange(3))


def test_sign_flip_test_exact_and_sampled():
    from anatomy_jax.utils.statistics import sign_flip_test

    assert sign_flip_test([1.0, 1.0, 1.0, 1.0]) == pytest.approx(2 / 16)  # exact: all-plus and all-minus
    assert sign_flip_test([1.0, -1.0, 1.0, -1.0]) == pytest.approx(1.0)
    assert sign_flip_test([3.0]) is None
    assert sign_flip_test(np.ones(20), num_permutations=2000) == pytest.approx(1 / 2001, abs=2e-3)
    rng = np.random.default_rng(0)
    null = [sign_flip_test(rng.normal(size=20), num_permutations=500, seed=s) for s in range(40)]
    assert np.mean(np.array(null) < 0.05) <= 0.15
    shifted = [sign_flip_test(rng.normal(1.0, 1.0, size=20), num_permutations=500) for _ in range(10)]
    assert np.median(shifted) < 0.01 and max(shifted) < 0.05
