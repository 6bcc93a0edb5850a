"""On the shared backdoored small CNN (real MNIST, 3x3 trigger): Net2Vec finds the trigger concept,
the learned combination is at least as good as the best single filter in most (concept, layer)
pairs, and a similarity overlay of the trigger peaks inside another stamped image's trigger."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from anatomy_jax.concepts import (PLANTED, ProbeSettings, analyse_layer, layer_activations, make_concept_set,
                                  peak_location, similarity_overlay)
from anatomy_jax.experiment.net2vec import ORDERING_FLOOR
from anatomy_jax.experiment.class_patterns import ClassPatternsConfig
from anatomy_jax.poison import make_patterns, stamp_everywhere
from tests.conftest import BACKDOORED_MNIST

LAYERS = ("conv1", "conv2")


@pytest.mark.slow
def test_net2vec_finds_the_trigger_and_the_ordering_holds(backdoored_mnist_cnn):
    f = backdoored_mnist_cnn
    trigger = ClassPatternsConfig(**BACKDOORED_MNIST).trigger(f.data.image_shape)  # the fixture's own trigger
    concepts = make_concept_set(f.data.test.images, 1200, seed=0, planted=trigger, planted_fraction=0.05)
    train, test = concepts.take(np.arange(800)), concepts.take(np.arange(800, 1200))
    acts_train = layer_activations(f.model, f.backdoored, train.images, LAYERS)
    acts_test = layer_activations(f.model, f.backdoored, test.images, LAYERS)
    settings = ProbeSettings(steps=150, batch_size=32)
    p = concepts.index(PLANTED)
    pairs, planted = [], {}
    for i, layer in enumerate(LAYERS):
        found = analyse_layer(acts_train[layer], train.masks, train.labels, acts_test[layer], test.masks, test.labels,
                              settings, jax.random.key(i), fraction=None, classify=False)
        planted[layer] = (float(found.single_filter_iou[p]), float(found.combination_iou[p]))
        pairs += [(c, s) for c, s in zip(found.combination_iou, found.single_filter_iou)
                  if np.isfinite(c) and np.isfinite(s) and max(c, s) >= ORDERING_FLOOR]  # ties at ~0 say nothing
    print("planted (single, combination) per layer:", planted)
    share = np.mean([c >= s for c, s in pairs])
    print(f"combination >= single in {share:.2f} of {len(pairs)} pairs")
    assert max(max(v) for v in planted.values()) >= 0.5
    assert share >= 0.7


@pytest.mark.slow
def test_overlay_of_the_trigger_peaks_inside_another_stamped_trigger(backdoored_mnist_cnn):
    f = backdoored_mnist_cnn
    r0, c0, r1, c1 = f.box
    patterns = make_patterns([ClassPatternsConfig(**BACKDOORED_MNIST).trigger(f.data.image_shape)], f.data.image_shape)
    x = jnp.asarray(f.data.test.images[:6], jnp.float32) / 255.0
    stamped = np.asarray(stamp_everywhere(x, patterns))
    images = np.round(stamped * 255).astype(np.uint8)
    acts = layer_activations(f.model, f.backdoored, images, LAYERS)
    query = ((r0 + r1) // 2, (c0 + c1) // 2)
    for layer in LAYERS:
        for j in range(1, 6):
            m = similarity_overlay(acts[layer][0], query, acts[layer][j], image_size=f.data.image_shape[:2])
            y, xx = peak_location(m)
            assert r0 <= y < r1 and c0 <= xx < c1, (layer, j, (y, xx))
