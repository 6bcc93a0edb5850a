"""FGSM/PGD constraints and strength, and the transfer matrix."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from anatomy_jax.adversarial import fgsm, pgd, transfer_matrix


def linear_apply(params, x):
    return x.reshape(x.shape[0], -1) @ params["w"] + params["b"]


@pytest.fixture(scope="module")
def linear_problem():
    rng = np.random.default_rng(0)
    params = {"w": jnp.asarray(rng.normal(size=(48, 5)), jnp.float32), "b": jnp.zeros(5)}
    x = jnp.asarray(rng.uniform(size=(64, 4, 4, 3)), jnp.float32)
    y = jnp.asarray(rng.integers(0, 5, 64))
    return params, x, y


def _mean_loss(params, x, y):
    logits = linear_apply(params, x)
    return jnp.mean(jax.nn.logsumexp(logits, axis=1) - jnp.take_along_axis(logits, y[:, None], 1)[:, 0])


def _loss(params, x, y):
    return float(_mean_loss(params, x, y))


@pytest.mark.parametrize("norm,eps", [("linf", 0.05), ("l2", 0.5)])
def test_pgd_stays_in_the_ball_and_the_pixel_range_and_raises_the_loss(linear_problem, norm, eps):
    params, x, y = linear_problem
    adv = pgd(linear_apply, params, x, y, jax.random.key(0), eps=eps, step_size=eps / 4, steps=10, norm=norm)
    delta = np.asarray(adv - x).reshape(len(x), -1)
    size = np.abs(delta).max(axis=1) if norm == "linf" else np.linalg.norm(delta, axis=1)
    assert (size <= eps + 1e-5).all() and size.max() > 0.5 * eps
    assert float(adv.min()) >= 0.0 and float(adv.max()) <= 1.0
    one_step = fgsm(linear_apply, params, x, y, eps=eps, norm=norm)
    assert _loss(params, x, y) < _loss(params, one_step, y) <= _loss(params, adv, y) + 1e-4


def test_fgsm_linf_is_the_sign_step_where_no_clipping_happens(linear_problem):
    params, x, y = linear_problem
    x = 0.25 + 0.5 * x  # keep x +- eps inside [0, 1]
    adv = fgsm(linear_apply, params, x, y, eps=0.1)
    grad = jax.grad(lambda z: _mean_loss(params, z, y))(x)
    np.testing.assert_allclose(adv, x + 0.1 * jnp.sign(grad), atol=1e-6)
    with pytest.raises(ValueError, match="unknown norm"):
        fgsm(linear_apply, params, x, y, eps=0.1, norm="l1")


def test_transfer_matrix_on_a_hand_built_case():
    clean = np.array([[1, 1, 1, 0], [1, 1, 0, 1]], bool)  # model 0 right on 0-2, model 1 on 0, 1, 3
    adv = np.zeros((2, 2, 4), bool)  # everything fooled...
    adv[0, 1, 1] = True  # ...except model 1 on model 0's adversarial image 1
    adv[1, 1, 0] = True  # model 1's attack fails on image 0
    out = transfer_matrix(clean, adv)
    # T[0, 1]: images both get right = {0, 1}, 0's attack fools 0 on both; transfers on image 0 only
    assert out["transfer"][0, 1] == 0.5 and out["counts"][0, 1] == 2
    # T[1, 0]: eligible images {0, 1} minus image 0 (1's attack failed on 1) = {1}; it transfers
    assert out["transfer"][1, 0] == 1.0 and out["counts"][1, 0] == 1
    assert out["transfer"][0, 0] == 1.0 and out["error"][0, 1] == 0.75
    with pytest.raises(ValueError, match="adv_correct must be"):
        transfer_matrix(clean, adv[:1])


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_pgd_random_start_per_example_does_not_depend_on_the_batch_split(linear_problem, norm):
    params, x, y = linear_problem
    half = len(x) // 2
    indices = jnp.arange(len(x))
    whole = pgd(linear_apply, params, x, y, jax.random.key(3), eps=0.1, step_size=0.03, steps=3, norm=norm,
                indices=indices)
    second = pgd(linear_apply, params, x[half:], y[half:], jax.random.key(3), eps=0.1, step_size=0.03, steps=3,
                 norm=norm, indices=indices[half:])
    np.testing.assert_allclose(np.asarray(whole[half:]), np.asarray(second), atol=1e-6)
    start = pgd(linear_apply, params, x, y, jax.random.key(3), eps=0.1, step_size=1e-9, steps=1, norm=norm,
                indices=indices)
    assert float(jnp.abs(start - x).max()) > 0.01  # the start is random, not the clean point


def _reference_pgd(apply_fn, params, x, y, key, *, eps, step_size, steps, norm):
    """The untargeted PGD as it was before the targeted option (random start, no indices)."""
    from anatomy_jax.adversarial.attacks import _direction, _loss, _project, _start_noise

    x_adv = _project(x + _start_noise(key, x, eps, norm), x, eps, norm)

    def step(_, x_adv):
        grad = jax.grad(lambda z: _loss(apply_fn, params, z, y))(x_adv)
        return _project(x_adv + step_size * _direction(grad, norm), x, eps, norm)

    return jax.lax.fori_loop(0, steps, step, x_adv)


@pytest.mark.parametrize("norm,eps", [("linf", 0.05), ("l2", 0.5)])
def test_untargeted_pgd_is_bitwise_what_it_was(linear_problem, norm, eps):
    params, x, y = linear_problem
    kwargs = dict(eps=eps, step_size=eps / 4, steps=5, norm=norm)
    default = pgd(linear_apply, params, x, y, jax.random.key(7), **kwargs)
    np.testing.assert_array_equal(default, _reference_pgd(linear_apply, params, x, y, jax.random.key(7), **kwargs))
    np.testing.assert_array_equal(default, pgd(linear_apply, params, x, y, jax.random.key(7), target=None, **kwargs))


@pytest.mark.parametrize("norm,eps", [("linf", 0.5), ("l2", 3.0)])
def test_targeted_pgd_reaches_the_target_and_lowers_its_loss(linear_problem, norm, eps):
    from anatomy_jax.adversarial.attacks import attack_success

    params, x, y = linear_problem
    pred = jnp.argmax(linear_apply(params, x), axis=1)
    target = (pred + 1 + jnp.asarray(np.random.default_rng(1).integers(0, 4, len(y)))) % 5  # never the prediction
    assert not bool(attack_success(linear_apply, params, x, y, target).any())
    adv = pgd(linear_apply, params, x, y, jax.random.key(0), eps=eps, step_size=eps / 10, steps=30, norm=norm,
              target=target)
    delta = np.asarray(adv - x).reshape(len(x), -1)
    size = np.abs(delta).max(axis=1) if norm == "linf" else np.linalg.norm(delta, axis=1)
    assert (size <= eps + 1e-5).all() and float(adv.min()) >= 0.0 and float(adv.max()) <= 1.0
    hit = np.asarray(attack_success(linear_apply, params, adv, y, target))
    assert hit.mean() > 0.9, hit.mean()
    assert _loss(params, adv, target) < _loss(params, x, target)
    # The untargeted attack of the same strength flips predictions but rarely to this target.
    untargeted = pgd(linear_apply, params, x, y, jax.random.key(0), eps=eps, step_size=eps / 10, steps=30, norm=norm)
    assert np.asarray(attack_success(linear_apply, params, untargeted, y, target)).mean() < hit.mean()
