"""PGD adversarial training as a training option: it trains on the attack's examples and makes the
net more robust than standard training."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from anatomy_jax.adversarial import attack_dataset, make_attack, pgd
from anatomy_jax.data import load_digits
from anatomy_jax.experiment.pattern_rate import PatternRateConfig, make_trainer, prepare_run
from anatomy_jax.train import AdversarialTraining, cross_entropy, train_loop


def test_adversarial_step_is_a_standard_step_on_the_pgd_batch():
    config = PatternRateConfig(seeds=(0,), frequencies=(0.0,), correlations=(0.0,), adversarial_eps=0.1, adversarial_steps=3,
                               augment=False)
    data = load_digits()
    trainer = make_trainer(config, data)
    assert trainer.adversarial == AdversarialTraining(0.1, 3)
    images = jnp.asarray(data.train.images)
    run_data, _, state = prepare_run(config, trainer, data, images, config.grid()[0])
    new_state, loss = jax.jit(trainer.train_step)(state, images, run_data.plan, run_data.patterns)

    @jax.jit
    def by_hand(state):  # the same step composed by hand: batch, PGD on it (the trainer's key), plain SGD update
        _, x, y = trainer.train_batch(state, images, run_data.plan, run_data.patterns)
        key = jax.random.fold_in(jax.random.fold_in(jax.random.wrap_key_data(state.rng), 2), state.step)
        x_adv = pgd(lambda p, z: trainer.model.apply({"params": p}, z), state.params, x, y, key, eps=0.1,
                    step_size=2.5 * 0.1 / 3, steps=3, indices=jnp.arange(len(x)))
        loss, grads = jax.value_and_grad(lambda p: cross_entropy(trainer.model.apply({"params": p}, x_adv), y))(
            state.params)
        updates, _ = trainer.tx.update(grads, state.opt_state, state.params)
        return optax.apply_updates(state.params, updates), loss, jnp.abs(x_adv - x).max()

    expected, ref_loss, distance = by_hand(state)
    assert 0.05 < float(distance) <= 0.1 + 1e-6
    assert float(loss) == pytest.approx(float(ref_loss), rel=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), new_state.params, expected)


def test_bad_adversarial_settings_are_refused():
    with pytest.raises(ValueError, match="unknown norm"):
        PatternRateConfig(adversarial_eps=0.1, adversarial_norm="l3").validate()
    with pytest.raises(ValueError, match="adversarial_eps must be >= 0"):
        PatternRateConfig(adversarial_eps=-0.1).validate()


@pytest.mark.slow
def test_adversarial_training_makes_the_net_more_robust_than_standard_training():
    data = load_digits()
    x_test = jnp.asarray(data.test.images, jnp.float32) / 255.0
    robust = {}
    for eps in (0.0, 0.2):
        config = PatternRateConfig(seeds=(0,), frequencies=(0.0,), correlations=(0.0,), steps=150, eval_every=150,
                                   adversarial_eps=eps, adversarial_steps=5, augment=False)
        trainer = make_trainer(config, data)
        run_data, _, state = prepare_run(config, trainer, data, jnp.asarray(data.train.images), config.grid()[0])
        state, history = train_loop(trainer, state, run_data, steps=config.steps, eval_every=config.eval_every)
        attack = make_attack(lambda v, z, m=trainer.model: m.apply(v, z), eps=0.2, steps=10)
        variables = {"params": state.params}
        adv = attack_dataset(attack, variables, x_test, data.test.labels, jax.random.key(0))
        predictions = np.asarray(trainer.model.apply(variables, jnp.asarray(adv)).argmax(-1))
        robust[eps] = float(np.mean(predictions == data.test.labels))
        assert history["clean_accuracy"][-1] >= 0.7, (eps, history["clean_accuracy"])
    assert robust[0.2] >= robust[0.0] + 0.15, robust  # measured: 0.26 vs 0.03
