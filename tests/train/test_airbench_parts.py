import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from anatomy_jax.train.airbench_parts import (alternating_flip, alternating_flip_mask, ema_update, lookahead_decay,
                                              lookahead_finish, lookahead_init, lookahead_step, tta_logits)


def test_ema_update_is_the_decayed_average_and_leaves_integers_alone():
    avg = {"w": jnp.array([1.0, -2.0]), "count": jnp.array(7)}
    new = {"w": jnp.array([3.0, 2.0]), "count": jnp.array(9)}
    out = ema_update(avg, new, 0.75)
    np.testing.assert_allclose(out["w"], [0.75 * 1 + 0.25 * 3, 0.75 * -2 + 0.25 * 2])
    assert int(out["count"]) == 7


def test_lookahead_hand_computed_sequence():
    # Each "training step" adds 1 to the weight; sync every 2 steps with decay 0.5:
    # step 2: slow = .5*0 + .5*2 = 1 -> w = 1; step 4: w = 2 + 1 = 3 -> slow = .5*1 + .5*3 = 2; step 6: slow = 3.
    w = jnp.array(0.0)
    state = lookahead_init(w)
    seen, slows = [], []
    for step in range(1, 7):
        w = w + 1.0
        w, state = lookahead_step(state, w, step, 0.5, period=2)
        seen.append(float(w))
        slows.append(float(state.slow))
    assert seen == [1.0, 1.0, 2.0, 2.0, 3.0, 3.0]
    assert slows == [0.0, 1.0, 1.0, 2.0, 2.0, 3.0]
    assert float(lookahead_finish(state, w + 5.0)) == 3.0


def test_lookahead_decay_schedule_is_airbenchs():
    total = 97
    np.testing.assert_allclose(lookahead_decay(jnp.arange(total + 1), total),
                               0.95 ** 5 * (np.arange(total + 1) / total) ** 3, rtol=1e-6)
    # A scheduled decay is evaluated at the step it syncs: step 10 of 20 with period 5
    w, state = lookahead_step(lookahead_init(jnp.array(0.0)), jnp.array(4.0), 10,
                              lambda s: lookahead_decay(s, 20), period=5)
    d = 0.95 ** 5 / 8
    np.testing.assert_allclose(float(w), (1 - d) * 4.0, rtol=1e-6)


def test_lookahead_with_constant_decay_matches_optax_lookahead():
    target = jnp.array([1.0, -2.0, 3.0])
    loss = lambda p: jnp.sum((p["w"] - target) ** 2 * jnp.array([1.0, 3.0, 0.5]))
    period, decay, lr, steps = 3, 0.3, 0.1, 11
    p0 = {"w": jnp.zeros(3)}

    # reference: optax.lookahead around SGD, slow_step_size = 1 - decay
    tx = optax.lookahead(optax.sgd(lr), sync_period=period, slow_step_size=1 - decay)
    ref = optax.LookaheadParams.init_synced(p0)
    ref_state = tx.init(ref)
    ref_fast, ref_slow = [], []
    for _ in range(steps):
        updates, ref_state = tx.update(jax.grad(loss)(ref.fast), ref_state, ref)
        ref = optax.apply_updates(ref, updates)
        ref_fast.append(np.asarray(ref.fast["w"]))
        ref_slow.append(np.asarray(ref.slow["w"]))

    sgd = optax.sgd(lr)

    @jax.jit
    def run(p):
        def body(carry, step):
            p, o, la = carry
            u, o = sgd.update(jax.grad(loss)(p), o, p)
            p, la = lookahead_step(la, optax.apply_updates(p, u), step, decay, period=period)
            return (p, o, la), (p["w"], la.slow["w"])
        _, (fast, slow) = jax.lax.scan(body, (p, sgd.init(p), lookahead_init(p)), jnp.arange(1, steps + 1))
        return fast, slow

    fast, slow = run(p0)
    np.testing.assert_allclose(fast, np.stack(ref_fast), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(slow, np.stack(ref_slow), rtol=1e-6, atol=1e-6)


def test_alternating_flip_flips_each_image_on_exactly_alternate_epochs():
    key = jax.random.key(3)
    n = 2000
    idx = jnp.arange(n)
    masks = np.stack([np.asarray(alternating_flip_mask(key, idx, e)) for e in range(6)])
    assert 0.46 < masks[0].mean() < 0.54  # a fair coin per image in epoch 0 (sd 0.011)
    assert (masks[1:] == ~masks[:-1]).all()  # then each image alternates
    # every image is mirrored in exactly 3 of 6 epochs
    assert (masks.sum(axis=0) == 3).all()
    # the flip belongs to the image (dataset index), not to its place in the batch
    perm = np.asarray(jax.random.permutation(jax.random.key(0), n))
    np.testing.assert_array_equal(np.asarray(alternating_flip_mask(key, jnp.asarray(perm), 3)), masks[3][perm])

    images = jax.random.uniform(jax.random.key(1), (8, 4, 5, 3))
    out = np.asarray(alternating_flip(key, images, jnp.arange(8), 1))
    m = masks[1][:8]
    np.testing.assert_array_equal(out[m], np.asarray(images)[m][:, :, ::-1])
    np.testing.assert_array_equal(out[~m], np.asarray(images)[~m])


def _toy_apply(v, x):
    """A non-symmetric, nonlinear classifier: tanh of a linear map of the flattened image."""
    return jnp.tanh(x.reshape(x.shape[0], -1) @ v)


@pytest.fixture(scope="module")
def toy():
    v = jax.random.normal(jax.random.key(0), (6 * 7 * 2, 5)) * 0.3
    x = jax.random.uniform(jax.random.key(1), (4, 6, 7, 2))
    return v, x


def test_tta_level_1_is_the_mean_of_the_two_logits_and_flip_invariant(toy):
    v, x = toy
    xn = np.asarray(x)
    f = lambda a: np.tanh(a.reshape(a.shape[0], -1) @ np.asarray(v, np.float64))
    hand = 0.5 * f(xn.astype(np.float64)) + 0.5 * f(xn[:, :, ::-1].astype(np.float64))
    got = tta_logits(_toy_apply, v, x, level=1)
    np.testing.assert_allclose(got, hand, rtol=1e-5, atol=1e-6)
    assert not np.allclose(f(xn), hand, atol=1e-3)  # the mirror changes the logits of this model
    np.testing.assert_allclose(tta_logits(_toy_apply, v, x[:, :, ::-1], level=1), got, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(tta_logits(_toy_apply, v, x, level=0), _toy_apply(v, x), rtol=1e-6)


def test_tta_level_2_adds_the_two_reflect_padded_translations(toy):
    v, x = toy
    xn = np.asarray(x, np.float64)
    f = lambda a: np.tanh(a.reshape(a.shape[0], -1) @ np.asarray(v, np.float64))
    mirror = lambda a: 0.5 * f(a) + 0.5 * f(a[:, :, ::-1])
    pad = np.pad(xn, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="reflect")
    up_left, down_right = pad[:, :6, :7], pad[:, 2:, 2:]
    hand = 0.5 * mirror(xn) + 0.25 * (mirror(up_left) + mirror(down_right))
    np.testing.assert_allclose(tta_logits(_toy_apply, v, x, level=2), hand, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="level must be"):
        tta_logits(_toy_apply, v, x, level=3)
