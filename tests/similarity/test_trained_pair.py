"""Two small CNNs trained on real MNIST with different seeds (one sweep): stitching between them,
PGD against them, and adversarial transfer from one to the other."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from anatomy_jax.adversarial import attack_dataset, make_attack, transfer_matrix
from anatomy_jax.similarity import (fit_linear_map, linear_cka, representation_shape, representations,
                                    stitched_accuracy, stitched_predictions)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def pair(mnist):
    """(model, [variables of seed 0, seed 1], data) after 200 steps on 10,000 MNIST images."""
    from anatomy_jax.data import subset
    from anatomy_jax.experiment.pattern_rate import PatternRateConfig, make_trainer, prepare_run
    from anatomy_jax.train import make_sweep_mesh, place_states, stack_runs, stack_trees, train_sweep, unstack_tree

    config = PatternRateConfig(dataset="mnist", frequencies=(0.0,), correlations=(0.0,), learning_rates=(0.05,),
                               seeds=(0, 1), steps=200, eval_every=200, augment=False)
    data = dataclasses.replace(mnist, train=subset(mnist.train, 10000), test=subset(mnist.test, 1000))
    trainer = make_trainer(config, data)
    images = jnp.asarray(data.train.images)
    prepared = [prepare_run(config, trainer, data, images, run) for run in config.grid()]
    states, histories = train_sweep(trainer, place_states(stack_trees([p[2] for p in prepared]), "loop", None),
                                    stack_runs([p[0] for p in prepared]), steps=200, eval_every=200,
                                    strategy="loop", mesh=make_sweep_mesh(1))
    assert all(h["clean_accuracy"][-1] >= 0.95 for h in histories)
    return trainer.model, [{"params": s.params} for s in unstack_tree(states)], data


def test_identity_stitch_gives_exactly_the_nets_own_predictions(pair):
    model, variables, data = pair
    h = representations(model, variables[0], data.test.images, ["conv2"])["conv2"]
    own = np.asarray(model.apply(variables[0], jnp.asarray(data.test.images, jnp.float32) / 255.0).argmax(-1))
    shape = representation_shape(model, variables[0], data.image_shape, "conv2")
    eye = jnp.eye(h.shape[1])
    stitched = stitched_predictions(model, variables[0], "conv2", h, eye, jnp.zeros(h.shape[1]), shape)
    np.testing.assert_array_equal(stitched, own)


def test_fitted_map_between_seeds_stitches_within_3_points(pair):
    model, variables, data = pair
    train_x = data.train.images[:5000]
    a_train = representations(model, variables[0], train_x, ["features"])["features"]
    b_train = representations(model, variables[1], train_x, ["features"])["features"]
    a_test = representations(model, variables[0], data.test.images, ["features"])["features"]
    w, b = fit_linear_map(a_train, b_train, ridge=1e-3)
    shape = representation_shape(model, variables[1], data.image_shape, "features")
    b_own = np.mean(np.asarray(model.apply(variables[1], jnp.asarray(data.test.images, jnp.float32) / 255.0)
                               .argmax(-1)) == data.test.labels)
    stitched = stitched_accuracy(model, variables[1], "features", a_test, w, b, shape, data.test.labels)
    assert stitched >= b_own - 0.03, (stitched, b_own)
    assert float(linear_cka(a_test, representations(model, variables[1], data.test.images,
                                                    ["features"])["features"])) > 0.5


def test_pgd_breaks_both_nets_and_transfers_between_seeds(pair):
    model, variables, data = pair
    x, y = data.test.images[:300].astype(np.float32) / 255.0, data.test.labels[:300]

    def apply_fn(v, z):
        return model.apply(v, z)

    pgd = make_attack(apply_fn, eps=0.3, steps=10)
    fgsm = make_attack(apply_fn, eps=0.3)
    predict = lambda v, z: np.asarray(apply_fn(v, jnp.asarray(z)).argmax(-1))
    clean = np.stack([predict(v, x) == y for v in variables])
    adv = [attack_dataset(pgd, v, x, y, jax.random.key(i)) for i, v in enumerate(variables)]
    assert np.abs(adv[0] - x).max() <= 0.3 + 1e-6 and adv[0].min() >= 0.0 and adv[0].max() <= 1.0
    adv_correct = np.stack([np.stack([predict(v, a) == y for v in variables]) for a in adv])
    weak = np.mean(predict(variables[0], attack_dataset(fgsm, variables[0], x, y, jax.random.key(0))) == y)
    assert clean.mean() >= 0.95
    assert adv_correct[0, 0].mean() < 0.10 and adv_correct[0, 0].mean() <= weak
    out = transfer_matrix(clean, adv_correct)
    assert out["transfer"][0, 0] == 1.0 and 0.3 < out["transfer"][0, 1] <= 1.0
    assert out["error"][0, 1] > 0.3


def test_cnn_to_resnet18_map_at_the_penultimate_layer_keeps_accuracy_within_5_points(pair):
    """Seed 001's first claim across architectures: a linear map from the CNN's penultimate
    representation into a ResNet-18's keeps the ResNet's accuracy within 5 points."""
    from anatomy_jax.experiment.pattern_rate import PatternRateConfig, make_trainer, prepare_run
    from anatomy_jax.train import train_loop

    cnn, variables, data = pair
    config = PatternRateConfig(dataset="mnist", model="resnet18", width=0.25, frequencies=(0.0,), correlations=(0.0,),
                               learning_rates=(0.05,), seeds=(0,), steps=200, batch_size=64, eval_every=200,
                               augment=False)  # batch 64: half the compute of the slowest test in the suite
    trainer = make_trainer(config, data)
    run_data, _, state = prepare_run(config, trainer, data, jnp.asarray(data.train.images), config.grid()[0])
    state, history = train_loop(trainer, state, run_data, steps=200, eval_every=200)
    resnet = trainer.model
    res_vars = {"params": state.params, "batch_stats": state.batch_stats}
    own = float(np.mean(np.asarray(resnet.apply(res_vars, jnp.asarray(data.test.images, jnp.float32) / 255.0)
                                   .argmax(-1)) == data.test.labels))
    assert own >= 0.9, own
    train_x = data.train.images[:3000]
    a_train = representations(cnn, variables[0], train_x, ["features"])["features"]
    b_train = representations(resnet, res_vars, train_x, ["features"])["features"]
    w, b = fit_linear_map(a_train, b_train, ridge=1e-3)
    a_test = representations(cnn, variables[0], data.test.images, ["features"])["features"]
    shape = representation_shape(resnet, res_vars, data.image_shape, "features")
    stitched = stitched_accuracy(resnet, res_vars, "features", a_test, w, b, shape, data.test.labels)
    assert stitched >= own - 0.05, (stitched, own)
