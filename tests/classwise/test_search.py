"""The all-class search: one vmapped program equals per-class searches, chunks change nothing,
the lambda schedule works, and bad input is refused."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from anatomy_jax.classwise import SearchSettings, search_class_patterns
from anatomy_jax.data import load_digits
from anatomy_jax.models.registry import create_model

SHORT = SearchSettings(steps=30, batch_size=16, check_every=5, patience=1)


@pytest.fixture(scope="module")
def digits_cnn():
    data = load_digits()
    model = create_model("cnn", num_classes=10)
    variables = model.init(jax.random.key(0), jnp.zeros((1, *data.image_shape)))
    images = data.train.images[:300].astype(np.float32) / 255.0
    return model, variables, images, data.train.labels[:300]


def test_all_classes_at_once_equal_one_class_at_a_time(digits_cnn):
    model, variables, images, labels = digits_cnn
    key = jax.random.key(3)
    together = search_class_patterns(model.apply, variables, images, labels, 10, key, settings=SHORT)
    assert together.masks.shape == (10, 8, 8) and together.patterns.shape == (10, 8, 8, 1)
    one_by_one = search_class_patterns(model.apply, variables, images, labels, 10, key, settings=SHORT, class_chunk=1)
    np.testing.assert_allclose(one_by_one.masks, together.masks, atol=1e-5)
    np.testing.assert_allclose(one_by_one.patterns, together.patterns, atol=1e-5)
    alone = search_class_patterns(model.apply, variables, images, labels, 10, key, settings=SHORT, classes=[7])
    np.testing.assert_allclose(alone.masks[0], together.masks[7], atol=1e-5)
    # different classes get different searches (not one pattern copied ten times)
    assert np.abs(together.masks[0] - together.masks[7]).max() > 1e-3


def _channel_model(variables, z):
    """A user's apply function: class k's logit is the mean brightness of channel k."""
    return z.mean(axis=(1, 2)) * variables


def test_schedule_shrinks_the_mask_once_the_target_is_reached():
    """On a model that a pattern lit in channel k fools whatever the mask size, the schedule must
    keep raising lambda while the attack succeeds, so the kept mask is far smaller than its start;
    a fixed lambda of zero never shrinks it."""
    x = jax.random.uniform(jax.random.key(0), (200, 6, 6, 3)) * 0.3
    y = np.arange(200) % 3
    settings = SearchSettings(steps=300, batch_size=32, check_every=5, patience=2, mask_init=0.5,
                              lambda_start=5.0, learning_rate=0.1)
    found = search_class_patterns(_channel_model, 40.0, np.asarray(x), y, 3, jax.random.key(1), settings=settings)
    assert found.reached.all()
    assert (found.lambdas > settings.lambda_start).all()
    assert found.masks.mean(axis=(1, 2)).max() < 0.25  # started at 0.5 everywhere
    for k in range(3):  # the pattern lights its own channel
        assert found.patterns[k, ..., k].mean() > found.patterns[k, ..., (k + 1) % 3].mean() + 0.3
    # the same search with lambda held at its start value (no schedule) keeps a larger mask
    fixed = search_class_patterns(_channel_model, 40.0, np.asarray(x), y, 3, jax.random.key(1),
                                  settings=dataclasses.replace(settings, init_lambda=settings.lambda_start,
                                                               patience=10 ** 6))
    assert (fixed.lambdas == settings.lambda_start).all()
    assert fixed.masks.mean() > found.masks.mean() + 0.02


def test_bad_input_is_refused(digits_cnn):
    model, variables, images, labels = digits_cnn
    key = jax.random.key(0)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        search_class_patterns(model.apply, variables, images * 255, labels, 10, key, settings=SHORT)
    with pytest.raises(ValueError, match="classes"):
        search_class_patterns(model.apply, variables, images, labels, 10, key, settings=SHORT, classes=[10])
    with pytest.raises(ValueError, match="differ in length"):
        search_class_patterns(model.apply, variables, images, labels[:-1], 10, key, settings=SHORT)
    with pytest.raises(ValueError, match="target_asr"):
        search_class_patterns(model.apply, variables, images, labels, 10, key, settings=SearchSettings(target_asr=0))
    with pytest.raises(ValueError, match="no images of other classes"):
        search_class_patterns(model.apply, variables, images, np.zeros_like(labels), 10, key, settings=SHORT)
