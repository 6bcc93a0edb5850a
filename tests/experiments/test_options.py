"""Study options that change the data or the patterns, and the checks on them."""

import dataclasses

import numpy as np
import pytest

from anatomy_jax.data import from_arrays
from anatomy_jax.experiment.options import DataOptions
from anatomy_jax.experiment.pattern_rate import PatternRateConfig
from anatomy_jax.poison import make_patterns
from anatomy_jax.train import TrainConfig, make_trainer


def test_flip_overrides_the_dataset_default():
    data = DataOptions().load_data()
    assert not data.flip_ok and not make_trainer(TrainConfig(), data).flip
    flipped = DataOptions(flip=True).load_data()
    assert flipped.flip_ok and make_trainer(TrainConfig(), flipped).flip
    assert not make_trainer(TrainConfig(augment=False), flipped).flip


def test_pattern_seed_changes_the_random_pattern_and_only_it():
    shape = (8, 8, 1)
    config = PatternRateConfig(pattern="random", patch_size=3)
    a = make_patterns([config.pattern_spec(shape)], shape).image
    b = make_patterns([dataclasses.replace(config, pattern_seed=1).pattern_spec(shape)], shape).image
    again = make_patterns([config.pattern_spec(shape)], shape).image
    assert not np.array_equal(a, b) and np.array_equal(a, again)


def test_npz_test_labels_must_occur_in_training():
    x = np.zeros((20, 4, 4, 1), np.uint8)
    with pytest.raises(ValueError, match=r"test labels \[7\] never occur"):
        from_arrays(x, np.arange(20) % 3, x[:5], np.array([0, 1, 2, 7, 1]))


@pytest.mark.parametrize("field,value,message", [
    ("label_smoothing", 1.5, "label_smoothing must be in"),
    ("dtype", "float16", "unknown dtype"),
    ("width", 0.0, "width must be > 0"),
])
def test_train_config_refuses_bad_values(field, value, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**{field: value}).validate()
