import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from anatomy_jax.dynamics import (RWCTracker, clean_matrix, cluster_by_type, cluster_layers, depth_order, elbow,
                                  group_rwc, group_rwc_std, relative_weight_change, rwc_claims)

PREV = {"conv": {"kernel": np.array([[1.0, -2.0], [0.0, 4.0]]), "bias": np.array([1.0, 1.0])},
        "dense": {"kernel": np.array([[0.5, 0.0, -1.0]])}}
NEW = {"conv": {"kernel": np.array([[1.5, -2.0], [1.0, 3.0]]), "bias": np.array([5.0, 5.0])},
       "dense": {"kernel": np.array([[0.0, 0.0, -1.5]])}}


def test_l1_ratio_matches_hand_computation():
    rwc = relative_weight_change(PREV, NEW, mode="l1_ratio")
    assert set(rwc) == {"conv/kernel", "dense/kernel"}  # the bias (ndim 1) is excluded
    assert rwc["conv/kernel"] == pytest.approx((0.5 + 0 + 1 + 1) / (1 + 2 + 0 + 4))
    assert rwc["dense/kernel"] == pytest.approx((0.5 + 0 + 0.5) / (0.5 + 0 + 1))


def test_elementwise_skips_zero_previous_values():
    rwc = relative_weight_change(PREV, NEW, mode="elementwise")
    # conv: 0.5/1, 0/2, (skipped: prev 0), 1/4 -> mean of three
    assert rwc["conv/kernel"] == pytest.approx((0.5 + 0.0 + 0.25) / 3)
    assert rwc["dense/kernel"] == pytest.approx((1.0 + 0.5) / 2)


def test_all_zero_tensor_gives_zero_or_inf_never_nan():
    zero = {"w": np.zeros((2, 2))}
    for mode in ("l1_ratio", "elementwise"):
        assert relative_weight_change(zero, zero, mode)["w"] == 0.0
        assert relative_weight_change(zero, {"w": np.ones((2, 2))}, mode)["w"] == math.inf
    include_all = relative_weight_change(PREV, NEW, include=lambda name, w: True)
    assert include_all["conv/bias"] == pytest.approx(4.0)
    with pytest.raises(ValueError, match="unknown RWC mode"):
        relative_weight_change(PREV, NEW, mode="l2")


def test_depth_order_is_stage_order_then_natural():
    names = ["logits/Dense_0/kernel", "conv1/Conv_10/kernel", "conv1/Conv_2/kernel", "features/Dense_0/kernel"]
    assert depth_order(names, ("conv1", "conv2", "features", "logits")) == [
        "conv1/Conv_2/kernel", "conv1/Conv_10/kernel", "features/Dense_0/kernel", "logits/Dense_0/kernel"]


def test_clustering_recovers_planted_groups_and_k():
    rng = np.random.default_rng(0)
    epochs = np.arange(12)
    # Three groups of layers whose change peaks early, mid-way and late in training.
    centers = [0.05 + 0.2 * ((epochs >= 4 * g) & (epochs < 4 * g + 4)) for g in range(3)]
    planted = np.repeat([0, 1, 2], 6)
    matrix = np.stack([centers[g] + rng.normal(0, 0.003, epochs.shape) for g in planted])
    matrix[4, 3] = np.nan
    matrix[7, 0] = np.inf
    result = cluster_layers(matrix, max_k=8, drop_first_last=False)
    assert result["k"] == 3
    assert adjusted_rand_score(planted, result["labels"]) == 1.0
    assert np.isfinite(result["matrix"]).all()
    assert len(result["pca"]) == 18 and len(result["pca"][0]) == 2
    assert result["sse"] == sorted(result["sse"], reverse=True)
    assert elbow([100, 20, 15, 12, 10]) == 2


def _planted(rng, n_layers: int, epochs: int = 12, groups: int = 3):
    t = np.arange(epochs)
    centers = [0.05 + 0.2 * ((t >= 4 * g) & (t < 4 * g + 4)) for g in range(groups)]
    planted = np.arange(n_layers) * groups // n_layers
    return planted, np.stack([centers[g] + rng.normal(0, 0.003, epochs) for g in planted])


def test_weightscale_defaults_are_the_published_ones():
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA

    rng = np.random.default_rng(1)
    planted, matrix = _planted(rng, 24)
    names = [f"layer{i}" for i in range(24)]
    result = cluster_layers(matrix, names)
    # first and last layers dropped, k = 1..17, seed 42069, 2-sigma outliers replaced
    assert result["names"] == names[1:-1] and result["ks"] == list(range(1, 18))
    cleaned = clean_matrix(matrix[1:-1], 2.0)
    np.testing.assert_allclose(result["matrix"], cleaned)
    for k in (1, 3, 5):
        ref = KMeans(k, init="k-means++", n_init=10, max_iter=300, random_state=42069).fit(cleaned)
        assert result["sse"][k - 1] == pytest.approx(ref.inertia_, rel=1e-9)
    assert result["k"] == 3 and adjusted_rand_score(planted[1:-1], result["labels"]) == 1.0
    # the PCA-reduced variant: k-means on the layers' first 2 principal components
    reduced = cluster_layers(matrix, names, pca_dim=2)
    coords = PCA(2, random_state=42069).fit_transform(cleaned)
    ref = KMeans(3, init="k-means++", n_init=10, max_iter=300, random_state=42069).fit(coords)
    assert reduced["pca_dim"] == 2 and reduced["sse"][2] == pytest.approx(ref.inertia_, rel=1e-6)
    assert reduced["sse"][0] < result["sse"][0]  # the reduced data keep only part of the variance
    assert reduced["k"] == 3 and adjusted_rand_score(planted[1:-1], reduced["labels"]) == 1.0
    assert cluster_layers(matrix[:6])["ks"] == [1, 2, 3, 4]  # fewer k only with fewer layers
    with pytest.raises(ValueError, match="pca_dim"):
        cluster_layers(matrix, pca_dim=0)


def test_outlier_replacement_also_replaces_a_real_epoch1_peak():
    row = np.array([[10.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0], [np.inf, 2.0, 4.0, np.nan, 2.0, 4.0, 2.0,
                                                                         4.0, 2.0, 4.0]])
    cleaned = clean_matrix(row, 2.0)
    # |10 - 1.9| = 8.1 > 2 * std (2 * 2.7): the epoch-1 peak becomes the layer mean, as in WeightScale
    np.testing.assert_allclose(cleaned[0], [1.9] + [1.0] * 9)
    np.testing.assert_allclose(cleaned[1], [3.0, 2.0, 4.0, 3.0, 2.0, 4.0, 2.0, 4.0, 2.0, 4.0])
    np.testing.assert_allclose(clean_matrix(row, None)[0], row[0])


def test_cluster_by_type_clusters_each_type_alone():
    rng = np.random.default_rng(2)
    planted_a, a = _planted(rng, 12)
    planted_b, b = _planted(rng, 8, groups=2)
    types = ["depthwise"] * 12 + ["pointwise"] * 8 + ["stem"]
    matrix = np.concatenate([a, b, np.full((1, 12), 0.3)])
    names = [f"l{i}" for i in range(21)]
    out = cluster_by_type(matrix, names, types, ("depthwise", "pointwise", "squeeze_excite"), max_k=6)
    assert set(out) == {"depthwise", "pointwise"}  # no squeeze-excite layers, stem not asked for
    assert out["depthwise"]["names"] == names[:12] and out["pointwise"]["names"] == names[12:20]
    assert out["depthwise"]["k"] == 3 and adjusted_rand_score(planted_a, out["depthwise"]["labels"]) == 1.0
    assert out["pointwise"]["k"] == 2 and adjusted_rand_score(planted_b, out["pointwise"]["labels"]) == 1.0
    with pytest.raises(ValueError, match="types"):
        cluster_by_type(matrix, names, types[:-1])


def test_group_rwc_averages_over_layers_and_seeds_and_checks_the_claims():
    groups = ["stem", "block1", "block1", "block2", "block3", "block4", "classifier"]
    base = np.array([0.5, 1.0, 3.0, 3.0, 4.0, 3.5, 9.0])[:, None] * np.array([10.0, 1.0, 1.0])  # epoch 1 large
    seeds = np.stack([base, base * 1.5])
    seeds[1, 2, 2] = np.nan  # seed 1 stopped early for one layer-epoch
    seeds[0, 1, 1] = np.inf
    curves = group_rwc(seeds, groups)
    assert list(curves) == ["stem", "block1", "block2", "block3", "block4", "classifier"]
    # block1, epoch 2: finite values 3.0 (seed 0, layer 2), 1.5 and 4.5 (seed 1): inf is left out
    assert curves["block1"][1] == pytest.approx((3.0 + 1.5 + 4.5) / 3)
    assert curves["block2"] == pytest.approx([37.5, 3.75, 3.75])
    std = group_rwc_std(seeds, groups)
    assert std["block2"] == pytest.approx([7.5, 0.75, 0.75])  # per-seed means 30/45, 3/4.5
    claims = {c["claim"]: c for c in rwc_claims(seeds, groups, "mnist")}
    assert claims["block1 < block2 < block3"]["holds"] is True
    assert claims["simple task: block4 <= block3"]["holds"] is True
    assert claims["later layers change more: block4 > block1"]["holds"] is True
    assert claims["block1 < block2 < block3"]["seeds"] == 2
    assert claims["block1 < block2 < block3"]["values"]["block2"] == pytest.approx(3.75)
    hard = {c["claim"]: c for c in rwc_claims(seeds, groups, "cifar100")}
    assert hard["CIFAR-100: block4 > block3"]["holds"] is False
    assert hard["CIFAR-100: block4 > block3"]["seeds_holding"] == 0
    vgg = {c["claim"]: c for c in rwc_claims(np.array([[9, 1, 1], [9, 3, 3], [9, 2, 2.0]]), ["early", "middle", "late"],
                                              "cifar10")}
    assert vgg["later layers change more: late > early"]["holds"] and vgg["simple task: late <= middle"]["holds"]
    assert rwc_claims(np.ones((3, 1)), ["block1", "block2", "block3"], "mnist")[0]["holds"] is None  # 1 epoch


def test_tracker_does_not_change_training():
    from anatomy_jax.experiment.pattern_rate import PatternRateConfig, make_trainer, prepare_run, load_study_data
    from anatomy_jax.train import train_loop

    config = PatternRateConfig(seeds=(0,), frequencies=(0.05,), correlations=(1.0,), learning_rates=(0.05,), steps=40,
                               batch_size=64)
    data = load_study_data(config)
    trainer = make_trainer(config, data)
    images = jnp.asarray(data.train.images)
    finals = []
    for track in (False, True):
        run_data, _, state = prepare_run(config, trainer, data, images, config.grid()[0])
        tracker = RWCTracker(initial_params=state.params)
        state, _ = train_loop(trainer, state, run_data, steps=40, eval_every=10, observers=[tracker] if track else [])
        finals.append(jax.device_get(state.params))
    jax.tree.map(np.testing.assert_array_equal, *finals)
    steps = [s for s, _ in tracker.history]
    assert steps == [10, 20, 30, 40]
    names, matrix = tracker.matrix()
    assert matrix.shape == (len(names), 4) and (matrix > 0).all()


def test_rwc_inside_a_vmapped_sweep_matches_runs_tracked_alone():
    from anatomy_jax.experiment.pattern_rate import PatternRateConfig, load_study_data, make_trainer, prepare_run
    from anatomy_jax.train import (make_sweep_mesh, per_run, place_states, stack_runs, stack_trees, train_loop,
                                   train_sweep)

    config = PatternRateConfig(frequencies=(0.0,), correlations=(1.0,), learning_rates=(0.05,), seeds=(0, 1),
                               steps=20, batch_size=64)
    data = load_study_data(config)
    trainer = make_trainer(config, data)
    images = jnp.asarray(data.train.images)
    alone = []
    for run in config.grid():
        run_data, _, state = prepare_run(config, trainer, data, images, run)
        tracker = RWCTracker(initial_params=state.params)
        train_loop(trainer, state, run_data, steps=20, eval_every=10, observers=[tracker])
        alone.append(tracker.matrix()[1])
    prepared = [prepare_run(config, trainer, data, images, run) for run in config.grid()]
    trackers = [RWCTracker(initial_params=p[2].params) for p in prepared]
    mesh = make_sweep_mesh(1)
    train_sweep(trainer, place_states(stack_trees([p[2] for p in prepared]), "vmap", mesh),
                stack_runs([p[0] for p in prepared]), steps=20, eval_every=10, strategy="vmap", mesh=mesh,
                observers=[per_run(trackers)])
    swept = [t.matrix()[1] for t in trackers]
    assert [s for s, _ in trackers[1].history] == [10, 20]
    np.testing.assert_allclose(swept[0], alone[0], rtol=1e-4)
    np.testing.assert_allclose(swept[1], alone[1], rtol=1e-4)
    assert np.abs(swept[0] - swept[1]).max() > 1e-3  # one history per run: the seeds differ


def test_weight_change_study_resumes_rwc_history_from_its_checkpoints(tmp_path):
    import shutil

    from anatomy_jax.experiment.weight_change import WeightChangeConfig, run_weight_change

    config = WeightChangeConfig(models=("cnn",), epochs=3, seeds=(0,), checkpoint_every=1, max_k=3)
    full = run_weight_change(config, tmp_path, progress=False)
    steps = sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir())
    assert steps == [22, 33]  # 11 steps per epoch; the newest two are kept
    # as if killed after epoch 2's checkpoint: no results, no final checkpoint
    shutil.rmtree(tmp_path / "checkpoints" / "33")
    (tmp_path / "results.json").unlink()
    for png in tmp_path.glob("*.png"):
        png.unlink()
    resumed = run_weight_change(dataclasses.replace(config, resume=True), tmp_path, progress=False)
    assert resumed["models"]["cnn"]["runs"][0]["rwc"] == full["models"]["cnn"]["runs"][0]["rwc"]
    assert resumed["models"]["cnn"]["mean_rwc"] == full["models"]["cnn"]["mean_rwc"]
    with pytest.raises(ValueError, match="different settings"):
        run_weight_change(dataclasses.replace(config, resume=True, epochs=4), tmp_path, progress=False)


@pytest.mark.slow
def test_rwc_on_mnist_is_finite_positive_and_largest_first(mnist):
    from anatomy_jax.data import subset
    from anatomy_jax.experiment.weight_change import WeightChangeConfig, train_model_rwc

    config = WeightChangeConfig(dataset="mnist", models=("cnn",), epochs=4, seeds=(0,), batch_size=128)
    data = dataclasses.replace(mnist, train=subset(mnist.train, 4096))
    record, = train_model_rwc(config, data, "cnn")
    matrix = np.asarray(record["rwc"], dtype=float)
    assert matrix.shape == (len(record["layers"]), 4)
    assert np.isfinite(matrix).all() and (matrix > 0).all()
    first_largest = (matrix[:, 0] >= matrix[:, 1:].max(axis=1)).mean()
    assert first_largest >= 0.5, matrix
    # the two definitions on the same run, at the scales of the stored reference dicts (SPEC seed 003):
    # the authors' element-wise mean is O(1), the paper's L1 ratio O(1e-2..1e-1)
    elementwise = np.asarray(record["rwc_by_mode"]["elementwise"], dtype=float)[:, 1:]
    l1 = np.asarray(record["rwc_by_mode"]["l1_ratio"], dtype=float)[:, 1:]
    np.testing.assert_allclose(l1, matrix[:, 1:])
    assert 0.1 <= np.median(elementwise) <= 10, np.median(elementwise)
    assert 0.005 <= np.median(l1) <= 0.2, np.median(l1)
    # the element-wise mean weights small weights (large relative changes) like large ones
    assert (elementwise > l1).all() and np.median(elementwise / l1) >= 1.5, (elementwise, l1)


def test_a_model_without_a_late_group_reports_the_claim_as_undecided():
    """VGG-11 has 8 convolutions: the paper's late group (the 12th on) is empty, so the claim
    'late > early' is reported as undecided with a reason, not silently dropped."""
    from anatomy_jax.dynamics.groups import rwc_claims

    rwc = np.abs(np.random.default_rng(0).normal(size=(2, 4, 5)))
    claims = rwc_claims(rwc, ["early", "early", "middle", "middle"], "digits")
    assert [c["claim"] for c in claims] == ["later layers change more: late > early"]
    assert claims[0]["holds"] is None and "no late group" in claims[0]["reason"]
