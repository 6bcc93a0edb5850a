"""On real MNIST: the search recovers a planted 3x3 trigger, and a clean CNN has small class-wise
"natural backdoors" (Zhao et al. 2021)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from anatomy_jax.classwise import (SearchSettings, anomaly_index, mask_area, mass_near_box, pattern_success_rate,
                                   search_class_patterns)

pytestmark = pytest.mark.slow
SETTINGS = SearchSettings(steps=300, batch_size=32)


def _search(trained, variables):
    rng = np.random.default_rng(0)
    pick = rng.permutation(len(trained.data.train))[:2000]
    images = trained.data.train.images[pick].astype(np.float32) / 255.0
    found = search_class_patterns(trained.model.apply, variables, images, trained.data.train.labels[pick], 10,
                                  jax.random.key(0), settings=SETTINGS)
    test_x = jnp.asarray(trained.data.test.images, jnp.float32) / 255.0
    asr = np.asarray(pattern_success_rate(trained.model.apply, variables, test_x, jnp.asarray(trained.data.test.labels),
                                          jnp.asarray(found.masks), jnp.asarray(found.patterns)))
    return found, asr, np.asarray(mask_area(found.masks))


def test_the_backdoor_target_has_the_smallest_mask_at_the_trigger(backdoored_mnist_cnn):
    trained = backdoored_mnist_cnn
    assert trained.trigger_asr["backdoored"] >= 0.95 and trained.clean_accuracy["backdoored"] >= 0.95
    found, asr, areas = _search(trained, trained.backdoored)
    t = trained.target
    near = float(mass_near_box(found.masks, trained.box, margin=2)[t])
    index = anomaly_index(areas)
    print(f"areas {np.round(areas, 4)}, target ASR {asr[t]:.3f}, anomaly index {index[t]:.2f}, near {near:.2f}")
    assert int(np.argmin(areas)) == t
    assert index[t] >= 2.0
    assert asr[t] >= 0.9
    assert near >= 0.5


def test_a_clean_model_has_small_predictive_patterns_for_most_classes(backdoored_mnist_cnn):
    trained = backdoored_mnist_cnn
    assert trained.clean_accuracy["natural"] >= 0.95 and trained.trigger_asr["natural"] <= 0.05
    _, asr, areas = _search(trained, trained.natural)
    print(f"natural: ASR {np.round(asr, 3)}, areas {np.round(areas, 4)}")
    assert np.sum((asr >= 0.5) & (areas <= 0.10)) >= 6
