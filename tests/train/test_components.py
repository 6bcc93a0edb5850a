"""The training pieces against independent references: the optimizers against optax's own, the
epoch order, crop and flip, and test-set evaluation (clean and backdoor metrics) against numpy."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from anatomy_jax.data import augment, load_digits, random_crop, random_flip
from anatomy_jax.models import create_model
from anatomy_jax.poison import (BackdoorMetrics, PatternSpec, backdoor_inputs, make_patterns, stamp,
                                target_margin)
from anatomy_jax.poison.poisoning import PoisonPlan
from anatomy_jax.train import (ClassificationMetrics, Trainer, batch_test_set, evaluate, make_optimizer,
                               with_learning_rate)


def _run_optimizer(tx, params, grads):
    state = tx.init(params)
    for g in grads:
        updates, state = tx.update(g, state, params)
        params = optax.apply_updates(params, updates)
    return params


@pytest.mark.parametrize("name,reference", [
    ("sgd", lambda lr: optax.chain(optax.add_decayed_weights(5e-4),
                                   optax.sgd(optax.cosine_decay_schedule(lr, 20), momentum=0.9))),
    ("adam", lambda lr: optax.adamw(optax.cosine_decay_schedule(lr, 20), weight_decay=5e-4)),
])
def test_optimizers_equal_optax_references(name, reference):
    key = jax.random.key(0)
    params = {"w": jax.random.normal(key, (5, 3)), "b": jnp.zeros(3)}
    grads = [jax.tree.map(lambda p, i=i: jax.random.normal(jax.random.fold_in(key, i), p.shape), params)
             for i in range(1, 13)]
    base = make_optimizer(name, total_steps=20, schedule="cosine", momentum=0.9, weight_decay=5e-4)
    ours = optax.GradientTransformation(lambda p: with_learning_rate(base.init(p), 0.1), base.update)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
                 _run_optimizer(ours, params, grads), _run_optimizer(reference(0.1), params, grads))


def test_each_image_once_per_epoch_and_a_new_order_each_epoch():
    data = load_digits()
    n = len(data.train)
    model = create_model("mlp", 10, width=0.25)
    trainer = Trainer(model, make_optimizer("sgd", total_steps=10), batch_size=64)
    images = jnp.asarray(data.train.images)
    # labels = image indices, so the batch's labels say which images it holds
    plan = PoisonPlan(jnp.full((n,), -1, jnp.int32), jnp.arange(n, dtype=jnp.int32), jnp.zeros((n, 2), jnp.int32))
    patterns = make_patterns([], data.image_shape)
    state = trainer.init(jax.random.key(0), jax.random.key(1), images, 0.1)
    batch = jax.jit(trainer.train_batch)
    per_epoch = n // 64
    epochs = []
    for e in range(2):
        seen = []
        for s in range(per_epoch):
            state, _, y = batch(state._replace(step=jnp.int32(e * per_epoch + s)), images, plan, patterns)
            seen.append(np.asarray(y))
        epochs.append(np.concatenate(seen))
    for order in epochs:
        assert len(order) == per_epoch * 64 and len(set(order.tolist())) == len(order)  # no image twice
    assert not np.array_equal(epochs[0], epochs[1])
    assert len(set(epochs[0].tolist()) ^ set(epochs[1].tolist())) <= 2 * (n - per_epoch * 64)  # same pool


def test_crop_and_flip_are_windows_and_mirrors_drawn_per_example():
    x = jax.random.uniform(jax.random.key(0), (64, 6, 6, 2))
    key = jax.random.key(1)
    cropped = np.asarray(random_crop(key, x, 2))
    padded = np.pad(np.asarray(x), ((0, 0), (2, 2), (2, 2), (0, 0)))
    offsets = set()
    for i in range(len(x)):
        matches = [(r, c) for r in range(5) for c in range(5) if np.array_equal(padded[i, r:r + 6, c:c + 6], cropped[i])]
        assert matches, i
        offsets.add(matches[0])
    assert len(offsets) > 10  # offsets vary between examples
    flipped = np.asarray(random_flip(key, x))
    mirrored = [np.array_equal(flipped[i], np.asarray(x)[i, :, ::-1]) for i in range(len(x))]
    same = [np.array_equal(flipped[i], np.asarray(x)[i]) for i in range(len(x))]
    assert all(m or s for m, s in zip(mirrored, same)) and 16 < sum(mirrored) < 48
    # per example: any split of the batch (data parallelism) gets the same augmentation
    full = np.asarray(augment(key, x, crop_padding=2, flip=True))
    half = np.asarray(augment(key, x[32:], crop_padding=2, flip=True, indices=jnp.arange(32, 64)))
    np.testing.assert_array_equal(full[32:], half)


@pytest.fixture(scope="module")
def bn_model_and_test():
    data = load_digits()
    model = create_model("resnet18", 10, width=0.125)
    x = jnp.asarray(data.train.images[:256], jnp.float32) / 255
    variables = model.init(jax.random.key(0), x[:1])
    # a few training-mode passes so the running statistics are no longer the initial ones
    params, stats = variables["params"], variables["batch_stats"]
    for i in range(3):
        _, updates = model.apply({"params": params, "batch_stats": stats}, x[64 * i:64 * (i + 1)], train=True,
                                 mutable=["batch_stats"])
        stats = updates["batch_stats"]
    return data, model, params, stats


def test_evaluation_equals_a_numpy_reference_with_running_batch_norm_statistics(bn_model_and_test):
    data, model, params, stats = bn_model_and_test
    images, labels = data.test.images[:333], data.test.labels[:333]  # 333: the last batch is padded
    test = batch_test_set(images, labels, batch_size=100)
    spec = PatternSpec("checkerboard", 2, "random")
    patterns = make_patterns([spec, PatternSpec("solid", 2, "top-left")], data.image_shape)
    inputs = backdoor_inputs(patterns, [0, 3], test.num_batches, test.batch_size, jax.random.key(5))

    def apply_fn(x):
        return model.apply({"params": params, "batch_stats": stats}, x)

    got = jax.jit(lambda: evaluate(apply_fn, test, (ClassificationMetrics(), BackdoorMetrics()), (None, inputs)))()

    x = jnp.asarray(images, jnp.float32) / 255
    clean = np.asarray(apply_fn(x))
    y = np.asarray(labels)
    log_softmax = clean - clean.max(1, keepdims=True)
    log_softmax -= np.log(np.exp(log_softmax).sum(1, keepdims=True))
    assert float(got["clean_accuracy"]) == pytest.approx((clean.argmax(1) == y).mean(), abs=1e-7)
    assert float(got["test_loss"]) == pytest.approx(-log_softmax[np.arange(len(y)), y].mean(), rel=1e-5)
    for k, target in enumerate((0, 3)):
        offsets = np.asarray(inputs.offsets[k]).reshape(-1, 2)[:len(y)]
        stamped = np.asarray(apply_fn(stamp(x, jnp.full(len(y), k), jnp.asarray(offsets), patterns)))
        keep = y != target
        asr = (stamped.argmax(1)[keep] == target).mean()
        t = jnp.full(len(y), target)
        margin = np.asarray(target_margin(jnp.asarray(stamped), t) - target_margin(jnp.asarray(clean), t))
        assert float(got["attack_success_rate"][k]) == pytest.approx(asr, abs=1e-7)
        assert float(got["reliance"][k]) == pytest.approx(margin[keep].mean(), rel=1e-4, abs=1e-5)
        # the clean target rate: the same non-target images called the target without the pattern
        assert float(got["clean_target_rate"][k]) == pytest.approx((clean.argmax(1)[keep] == target).mean(), abs=1e-7)
    # evaluation normalises with the running statistics: other statistics give other predictions
    fresh = model.init(jax.random.key(0), x[:1])["batch_stats"]
    other = evaluate(lambda z: model.apply({"params": params, "batch_stats": fresh}, z), test,
                     (ClassificationMetrics(),), (None,))
    assert float(other["test_loss"]) != pytest.approx(float(got["test_loss"]), rel=1e-3)


def test_runs_per_device_counts_each_runs_data_in_the_memory_budget(monkeypatch):
    """The estimate behind --runs-per-device: per run the train state plus its plan and metric
    inputs (`run_data_bytes`), against the budget less the datasets; closed form on the loop path."""
    from anatomy_jax.experiment.pattern_rate import PatternRateConfig, make_trainer, prepare_run
    from anatomy_jax.train import strategies

    config = PatternRateConfig(seeds=(0,), frequencies=(0.1,), correlations=(1.0,), learning_rates=(0.05,))
    data = load_digits()
    trainer = make_trainer(config, data)
    _, _, state = prepare_run(config, trainer, data, jnp.asarray(data.train.images), config.grid()[0])
    state_bytes = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(state))
    run_bytes = 12_345
    monkeypatch.setattr(strategies, "_memory_budget_bytes", lambda: 10 * (state_bytes + run_bytes) + 1000)

    def runs(**kw):
        return strategies.auto_runs_per_device(trainer, state, data.image_shape, 100, 1, "loop", **kw)

    assert runs(run_data_bytes=run_bytes, reserved_bytes=1000) == 10
    assert runs(run_data_bytes=run_bytes, reserved_bytes=1000 + state_bytes + run_bytes) == 9
    assert runs(reserved_bytes=1000) == (10 * (state_bytes + run_bytes)) // state_bytes  # without the run data
    assert strategies.auto_runs_per_device(trainer, state, data.image_shape, 6, 2, "loop") == 3  # all fit: 6 / 2
