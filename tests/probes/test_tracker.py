import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from anatomy_jax.experiment.pattern_rate import (METRICS, PatternRateConfig, load_study_data, make_trainer,
                                                 prepare_run)
from anatomy_jax.poison import PatternSpec, PoisonSpec
from anatomy_jax.probes import (GROUP_NAMES, GradientProbe, SweepGradientProbe, example_groups, gradient_alignment,
                                group_names, model_loss_fn, per_example_grads, probe_batch, stratified_sizes)
from anatomy_jax.train import (RunSpec, batch_test_set, per_run, plan_run, stack_runs, stack_trees, train_loop,
                               train_sweep)
from anatomy_jax.train import prepare_run as build_run
from anatomy_jax.train.config import train_config_of

CONFIG = PatternRateConfig(frequencies=(0.03,), correlations=(0.5, 1.0), learning_rates=(0.05,), seeds=(0,),
                           steps=20, batch_size=64)


@functools.cache
def _setup():
    data = load_study_data(CONFIG)
    return data, make_trainer(CONFIG, data), jnp.asarray(data.train.images)


def _training_shares(run_data):
    groups = example_groups(np.asarray(run_data.plan.pattern_id), np.asarray(run_data.plan.labels),
                            np.asarray(run_data.backdoor.targets))
    return np.bincount(groups, minlength=3) / len(groups), groups


def test_stratified_sizes_rule():
    # 100 slots, floor 16: the 5-image group gives all 5, the 95-image one the floor, the rest the remainder.
    np.testing.assert_array_equal(stratified_sizes([900, 95, 5], 100, 16), [79, 16, 5])
    np.testing.assert_array_equal(stratified_sizes([3, 2, 0], 10, 1), [3, 2, 0])  # fewer examples than slots
    np.testing.assert_array_equal(stratified_sizes([500, 300, 200], 10, 1), [5, 3, 2])  # proportional
    rng = np.random.default_rng(0)
    for _ in range(500):
        k = int(rng.integers(1, 8))
        counts = rng.integers(0, 60, k) * (rng.random(k) < 0.8) + (rng.random(k) < 0.3) * rng.integers(0, 3000, k)
        size = int(rng.integers(1, 300))
        floor = size // (2 * k)
        sizes = stratified_sizes(counts, size, floor)
        assert sizes.sum() == min(size, counts.sum())
        assert (sizes <= counts).all() and (sizes >= np.minimum(counts, floor)).all()


def test_probe_batch_is_stratified_and_weighted_to_the_training_set():
    data, trainer, images = _setup()
    run_data = prepare_run(CONFIG, trainer, data, images, CONFIG.grid()[0]).data  # f = 0.03, c = 0.5
    shares, groups = _training_shares(run_data)
    counts = np.bincount(groups, minlength=3)
    batch = probe_batch(run_data, jax.random.key(3), probe_size=60, saliency_size=16)
    g, w, y = np.asarray(batch.groups), np.asarray(batch.weights), np.asarray(batch.y)
    # The rare pattern groups get the floor 60 // 6 = 10, not their proportional 0.9 images.
    np.testing.assert_array_equal(np.bincount(g, minlength=3), stratified_sizes(counts, 60, 10))
    assert np.bincount(g, minlength=3)[1:].tolist() == [10, 10]
    # Each group's total weight is its share of the training set, so the weights sum to 1.
    np.testing.assert_allclose([w[g == k].sum() for k in range(3)], shares, rtol=1e-6)
    assert w.sum() == pytest.approx(1.0, abs=1e-6)
    target = int(run_data.backdoor.targets[0])
    assert (y[g == 1] == target).all() and (y[g == 2] != target).all()
    again = probe_batch(run_data, jax.random.key(3), probe_size=60, saliency_size=16)
    np.testing.assert_array_equal(again.x, batch.x)  # the key decides the batch
    other = probe_batch(run_data, jax.random.key(4), probe_size=60, saliency_size=16)
    assert not np.array_equal(other.x, batch.x)


def test_probes_do_not_change_training_and_record_sane_values():
    data, _, images = _setup()
    config = PatternRateConfig(frequencies=(0.1,), correlations=(1.0,), learning_rates=(0.05,), steps=40,
                               batch_size=64)
    trainer = make_trainer(config, data)
    finals = []
    for with_probe in (False, True):
        run_data, _, state = prepare_run(config, trainer, data, images, config.grid()[0])
        probe = GradientProbe(trainer, run_data, jax.random.key(0), probe_size=64, saliency_size=32, chunk_size=16)
        state, _ = train_loop(trainer, state, run_data, steps=40, eval_every=20,
                              observers=[probe] if with_probe else [])
        finals.append(jax.device_get(state.params))
    jax.tree.map(np.testing.assert_array_equal, *finals)
    assert probe.group_names == GROUP_NAMES and probe.layers == ("conv1/Conv_0", "logits/Dense_0")
    assert [r["step"] for r in probe.records()] == [20, 40]
    last = probe.records()[-1]
    # f = 0.1 of 1437 images: proportional share 6.4 of 64 < floor 10, so the pattern gets 10 images;
    # c = 1: every patterned image carries the target label.
    assert last["count"] == [54.0, 10.0, 0.0]
    shares, _ = _training_shares(run_data)
    np.testing.assert_allclose(last["weight"], shares, rtol=1e-5)
    assert abs(sum(last["projection_share"]) - 1.0) < 1e-4 and abs(sum(last["update_share"]) - 1.0) < 1e-4
    assert 0.0 < last["saliency_mass"] < 1.0
    assert all(0.0 <= a <= 1.0 for a in last["coherence"]) and 0.0 < last["coherence_overall"] < 1.0
    assert set(last["layers"]) == {"conv1/Conv_0", "logits/Dense_0"}
    for stats in last["layers"].values():
        assert abs(sum(stats["projection_share"]) - 1.0) < 1e-4 and "count" not in stats


def test_sweep_probe_agrees_with_one_probe_per_run_and_with_a_direct_computation():
    data, trainer, images = _setup()
    prepared = [prepare_run(CONFIG, trainer, data, images, run) for run in CONFIG.grid()]  # c = 0.5 and 1.0
    keys = [jax.random.key(10 + i) for i in range(2)]
    options = dict(probe_size=40, saliency_size=16, chunk_size=16)
    sweep = SweepGradientProbe(trainer, [(p.data, k) for p, k in zip(prepared, keys)], **options)
    singles = [GradientProbe(trainer, p.data, k, **options) for p, k in zip(prepared, keys)]
    # chunks in a lax.map loop (the GPU/TPU default) instead of unrolled ones (the CPU default)
    padded = SweepGradientProbe(trainer, [(p.data, k) for p, k in zip(prepared, keys)], unroll_chunks=False,
                                **options)

    def with_padding(step, states, metrics):  # a leading axis of 3: the last run repeated
        padded(step, jax.tree.map(lambda x: np.concatenate([x, x[-1:]]), states), metrics)

    states, _ = train_sweep(trainer, stack_trees([p.state for p in prepared]), stack_runs([p.data for p in prepared]),
                            steps=20, eval_every=10, strategy="loop",
                            observers=[sweep, per_run(singles), with_padding])
    records = sweep.records()
    assert len(records) == 2 and len(padded.records()) == 2
    assert [r["step"] for r in records[1]] == [10, 20]

    def close(a, b):
        if isinstance(a, dict):
            assert a.keys() == b.keys()
            for key in a:
                close(a[key], b[key])
        elif isinstance(a, list) and a and isinstance(a[0], dict):
            assert len(a) == len(b)
            for x, y in zip(a, b):
                close(x, y)
        else:
            np.testing.assert_allclose(a, b, rtol=2e-3, atol=2e-5)

    for r in range(2):
        close(records[r], singles[r].records())
        close(records[r], padded.records()[r])
    assert records[0][-1]["count"][2] > 0 and records[1][-1]["count"][2] == 0  # c = 0.5 vs c = 1
    assert records[0][-1]["projection_share"] != pytest.approx(records[1][-1]["projection_share"], abs=1e-3)

    # The chunked, vmapped statistics equal gradient_alignment of all per-example gradients at once.
    final = jax.tree.map(lambda x: x[0], jax.device_get(states))
    batch = sweep.batches[0]
    loss_fn = model_loss_fn(trainer.model.apply, final.batch_stats)
    grads = per_example_grads(loss_fn, final.params, batch.x, batch.y)
    mean = jax.tree.map(lambda g: jnp.tensordot(batch.weights, g, 1) / batch.weights.sum(), grads)
    update, _ = trainer.tx.update(mean, final.opt_state, final.params)
    direct = gradient_alignment(grads, batch.groups, 3, update=update, weights=batch.weights)
    last = records[0][-1]
    for key, value in direct.items():
        np.testing.assert_allclose(last[key], value, rtol=2e-3, atol=2e-5, err_msg=key)
    keep = lambda path: path.startswith("logits/Dense_0/")
    only = jax.tree_util.tree_map_with_path(
        lambda p, g: g if keep("/".join(k.key for k in p)) else None, grads)
    flat_update = ravel_pytree(jax.tree_util.tree_map_with_path(
        lambda p, u: u if keep("/".join(k.key for k in p)) else jnp.zeros((0,)), update))[0]
    layer = gradient_alignment(only, batch.groups, 3, update=flat_update, weights=batch.weights)
    for key, value in last["layers"]["logits/Dense_0"].items():
        np.testing.assert_allclose(value, layer[key], rtol=2e-3, atol=2e-5, err_msg=key)

    # A resumed probe keeps the records it is given and appends after them.
    resumed = SweepGradientProbe(trainer, [(p.data, k) for p, k in zip(prepared, keys)], records=records, **options)
    assert resumed.records() == records
    with pytest.raises(ValueError, match="records of 2 runs"):
        resumed.restore(records[:1])


def test_two_patterns_give_five_named_groups():
    assert group_names(["checkerboard"]) == GROUP_NAMES
    assert group_names(["checkerboard", "solid"]) == ("clean", "checkerboard_target", "checkerboard_other",
                                                      "solid_target", "solid_other")
    assert group_names(["solid", "solid"])[1::2] == ("solid0_target", "solid1_target")
    pid = np.array([-1, 0, 0, 1, 1, -1])
    labels = np.array([3, 7, 2, 4, 4, 7])
    np.testing.assert_array_equal(example_groups(pid, labels, [7, 5]), [0, 1, 2, 4, 4, 0])
    data, trainer, images = _setup()
    spec = RunSpec(train_config_of(CONFIG), 0, 0.05, (
        PoisonSpec(PatternSpec("checkerboard", 2, "bottom-right"), 0, 0.05, 1.0),
        PoisonSpec(PatternSpec("solid", 2, "top-left"), 1, 0.05, 0.5)))
    test = batch_test_set(data.test.images, data.test.labels, trainer.eval_batch_size)
    run = build_run(trainer, spec, images, test, plan_run(spec, data), METRICS)
    probe = GradientProbe(trainer, run.data, jax.random.key(0), probe_size=50, saliency_size=8, chunk_size=25,
                          pattern_names=["checkerboard", "solid"])
    assert len(probe.group_names) == 5
    probe(0, jax.device_get(run.state), {})
    record = probe.records()[0]
    assert len(record["count"]) == 5 and np.shape(record["mean_cosine"]) == (5, 5)
    # pattern 0 (c = 1) has no "other" images; the floor 50 // 10 = 5 holds for the others
    assert record["count"][1] == 5 and record["count"][2] == 0 and record["count"][3:] == [5.0, 5.0]
    groups = example_groups(np.asarray(run.data.plan.pattern_id), np.asarray(run.data.plan.labels), [0, 1])
    np.testing.assert_allclose(record["weight"], np.bincount(groups, minlength=5) / len(groups), rtol=1e-5)
    assert abs(sum(record["projection_share"]) - 1.0) < 1e-4


def test_records_list_the_layers_in_the_probes_order_not_sorted():
    # jit returns dicts with sorted keys; records keep the probe's layer order (network order by
    # default, so "first" and "last" mean what they say for models whose names do not sort that way)
    data, trainer, images = _setup()
    run_data, _, state = prepare_run(CONFIG, trainer, data, images, CONFIG.grid()[0])
    order = ("logits/Dense_0", "conv1/Conv_0")
    probe = GradientProbe(trainer, run_data, jax.random.key(0), probe_size=32, saliency_size=16, chunk_size=16,
                          layers=order)
    probe(10, jax.device_get(state), {})
    assert list(probe.records()[0]["layers"]) == list(order)
