import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from anatomy_jax.poison import PatternSpec, clean_plan, PoisonSpec, make_patterns, plan_poison, poison_images, stamp

SHAPE = (8, 8, 1)


@pytest.fixture(scope="module")
def digits():
    from anatomy_jax.data import load_digits

    return load_digits()


@pytest.mark.parametrize("frequency,correlation", [(0.05, 1.0), (0.1, 0.37), (0.02, 0.0), (0.3, 0.5)])
def test_realised_frequency_and_correlation_are_exact(digits, frequency, correlation):
    labels = digits.train.labels
    spec = PoisonSpec(PatternSpec(size=2), target=3, frequency=frequency, correlation=correlation)
    plan, stats = plan_poison(jax.random.key(0), labels, [spec], 10, SHAPE)
    n = math.floor(frequency * len(labels) + 0.5)
    carries = np.asarray(plan.pattern_id) == 0
    assert carries.sum() == n == stats[0]["count"]
    assert (labels[carries] != 3).all()  # drawn from non-target classes
    relabelled = (np.asarray(plan.labels)[carries] == 3).sum()
    assert relabelled == math.floor(correlation * n + 0.5)
    assert stats[0]["realised_correlation"] == pytest.approx(relabelled / n)
    assert stats[0]["realised_frequency"] == pytest.approx(n / len(labels))
    # Images without the pattern keep their labels.
    np.testing.assert_array_equal(np.asarray(plan.labels)[~carries], labels[~carries])
    # Patterned images that are not relabelled keep their true label.
    kept = carries & (np.asarray(plan.labels) != 3)
    np.testing.assert_array_equal(np.asarray(plan.labels)[kept], labels[kept])


def test_pixels_inside_mask_equal_pattern_and_outside_untouched(digits):
    spec = PoisonSpec(PatternSpec("checkerboard", 3, "bottom-right"), target=0, frequency=0.1)
    plan, _ = plan_poison(jax.random.key(1), digits.train.labels, [spec], 10, SHAPE)
    patterns = make_patterns([spec.pattern], SHAPE)
    x = np.asarray(poison_images(digits.train.images, plan, patterns))
    clean = np.asarray(poison_images(digits.train.images, clean_plan(digits.train.labels), patterns))
    np.testing.assert_allclose(clean, digits.train.images / 255, atol=1e-6)
    carries = np.asarray(plan.pattern_id) == 0
    board = (np.add.outer(np.arange(3), np.arange(3)) % 2 == 0).astype(np.float32)
    for i in np.where(carries)[0]:
        np.testing.assert_array_equal(x[i, 5:, 5:, 0], board)
        np.testing.assert_array_equal(x[i, :5], clean[i, :5])
        np.testing.assert_array_equal(x[i, :, :5], clean[i, :, :5])
    np.testing.assert_array_equal(x[~carries], clean[~carries])


def test_random_location_is_fixed_per_image_and_in_bounds(digits):
    spec = PoisonSpec(PatternSpec("solid", 3, "random"), target=0, frequency=0.2)
    plan, _ = plan_poison(jax.random.key(2), digits.train.labels, [spec], 10, SHAPE)
    again, _ = plan_poison(jax.random.key(2), digits.train.labels, [spec], 10, SHAPE)
    np.testing.assert_array_equal(plan.offsets, again.offsets)
    offsets = np.asarray(plan.offsets)[np.asarray(plan.pattern_id) == 0]
    assert offsets.min() >= 0 and offsets.max() <= 5
    assert len({tuple(o) for o in offsets}) > 10  # locations vary across images
    patterns = make_patterns([spec.pattern], SHAPE)
    x = np.asarray(poison_images(np.zeros((len(digits.train.labels), *SHAPE), np.uint8), plan, patterns))
    for i in np.where(np.asarray(plan.pattern_id) == 0)[0][:20]:
        r, c = plan.offsets[i]
        assert x[i].sum() == 9 and (x[i, r:r + 3, c:c + 3] == 1).all()


def test_same_key_same_selection_different_key_different(digits):
    spec = PoisonSpec(frequency=0.05, correlation=0.5, pattern=PatternSpec(size=2))
    a, _ = plan_poison(jax.random.key(5), digits.train.labels, [spec], 10, SHAPE)
    b, _ = plan_poison(jax.random.key(5), digits.train.labels, [spec], 10, SHAPE)
    c, _ = plan_poison(jax.random.key(6), digits.train.labels, [spec], 10, SHAPE)
    np.testing.assert_array_equal(a.pattern_id, b.pattern_id)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert not np.array_equal(a.pattern_id, c.pattern_id)


def test_clean_label_touches_only_target_images(digits):
    spec = PoisonSpec(PatternSpec(size=2), target=4, frequency=0.05, clean_label=True)
    plan, stats = plan_poison(jax.random.key(0), digits.train.labels, [spec], 10, SHAPE)
    carries = np.asarray(plan.pattern_id) == 0
    assert (digits.train.labels[carries] == 4).all()
    np.testing.assert_array_equal(plan.labels, digits.train.labels)
    assert stats[0]["realised_correlation"] == 1.0


def test_competing_specs_take_disjoint_images(digits):
    specs = [PoisonSpec(PatternSpec(size=2), target=0, frequency=0.1, correlation=1.0),
             PoisonSpec(PatternSpec("solid", 2, "top-left"), target=1, frequency=0.1, correlation=0.5)]
    plan, stats = plan_poison(jax.random.key(0), digits.train.labels, specs, 10, SHAPE)
    ids = np.asarray(plan.pattern_id)
    assert (ids == 0).sum() == stats[0]["count"] and (ids == 1).sum() == stats[1]["count"]
    assert (digits.train.labels[ids == 1] != 1).all()


def test_blend_and_additive_noise_follow_their_formulas():
    x = jnp.full((2, 4, 4, 1), 0.5)
    patterns = make_patterns([PatternSpec("blend", alpha=0.2, seed=3), PatternSpec("noise", alpha=0.1, seed=3)],
                             (4, 4, 1))
    out = np.asarray(stamp(x, jnp.array([0, 1]), jnp.zeros((2, 2), jnp.int32), patterns))
    np.testing.assert_allclose(out[0], 0.5 * 0.8 + 0.2 * np.asarray(patterns.image[0]), atol=1e-6)
    np.testing.assert_allclose(out[1], np.clip(0.5 + 0.1 * np.asarray(patterns.image[1]), 0, 1), atol=1e-6)


@pytest.mark.parametrize("spec,message", [
    (PoisonSpec(frequency=1.5), "frequency must be in"),
    (PoisonSpec(frequency=-0.1), "frequency must be in"),
    (PoisonSpec(correlation=1.01), "correlation must be in"),
    (PoisonSpec(target=10), "target class 10 does not exist"),
    (PoisonSpec(pattern=PatternSpec(size=9)), "does not fit"),
    (PoisonSpec(pattern=PatternSpec(kind="stars")), "unknown pattern kind"),
    (PoisonSpec(pattern=PatternSpec(location="middle")), "unknown pattern location"),
    (PoisonSpec(pattern=PatternSpec(alpha=0.0)), "alpha must be in"),
    (PoisonSpec(frequency=0.95), "only .* non-target images are free"),
    (PoisonSpec(frequency=0.2, clean_label=True), "only .* target-class images are free"),
])
def test_bad_specs_raise(digits, spec, message):
    with pytest.raises(ValueError, match=message):
        plan_poison(jax.random.key(0), digits.train.labels, [spec], 10, SHAPE)


def test_pool_shrinks_with_earlier_specs(digits):
    specs = [PoisonSpec(target=0, frequency=0.6), PoisonSpec(target=1, frequency=0.4)]
    with pytest.raises(ValueError, match="poison spec 1 needs"):
        plan_poison(jax.random.key(0), digits.train.labels, specs, 10, SHAPE)


def test_stamp_everywhere_pastes_a_fixed_patch_on_every_image():
    from anatomy_jax.poison import stamp_everywhere

    patterns = make_patterns([PatternSpec("checkerboard", 3, "bottom-right")], (8, 8, 1))
    x = jax.random.uniform(jax.random.key(0), (5, 8, 8, 1))
    expected = x * (1 - patterns.mask[0]) + patterns.mask[0] * patterns.image[0]
    np.testing.assert_allclose(stamp_everywhere(x, patterns), expected)
    np.testing.assert_allclose(stamp_everywhere(x, patterns)[:, :5], x[:, :5])  # rows above the patch untouched
