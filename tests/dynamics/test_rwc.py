import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from anatomy_jax.dynamics import RWCTracker, cluster_layers, depth_order, elbow, relative_weight_change

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
    result = cluster_layers(matrix, max_k=8)
    assert result["k"] == 3
    assert adjusted_rand_score(planted, result["labels"]) == 1.0
    assert np.isfinite(result["matrix"]).all()
    assert len(result["pca"]) == 18 and len(result["pca"][0]) == 2
    assert result["sse"] == sorted(result["sse"], reverse=True)
    assert elbow([100, 20, 15, 12, 10]) == 2


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
