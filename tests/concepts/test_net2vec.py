"""Net2Vec pieces against hand-computed cases and numpy; probes vmapped equal probes alone."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from anatomy_jax.concepts import (ProbeSettings, average_precision, binarise, embedding_similarity, filter_counts,
                                  probe_iou, quantile_thresholds, set_iou, single_filter_iou, top_filter_masks,
                                  train_segmentation_probes)


def test_set_iou_hand_computed():
    pred = np.zeros((2, 3, 3), bool)
    target = np.zeros((2, 3, 3), bool)
    pred[0, 0, :2] = True  # 2 px
    target[0, 0, 1:] = True  # 2 px, 1 shared
    pred[1, 2, 2] = True  # 1 px, not shared
    target[1, 1, 1] = True
    # pooled over images: intersection 1, union 2 + 2 - 1 + 1 + 1 = 5
    assert set_iou(pred, target) == pytest.approx(1 / 5)
    assert set_iou(np.zeros((1, 2, 2)), np.zeros((1, 2, 2))) is None
    with pytest.raises(ValueError, match="shape"):
        set_iou(pred, target[:1])


def test_average_precision_hand_computed():
    # ranked: 1(pos) 2(neg) 3(pos) 4(neg) 5(pos): precision at the positives 1, 2/3, 3/5
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5])
    labels = np.array([1, 0, 1, 0, 1])
    assert average_precision(scores, labels) == pytest.approx((1 + 2 / 3 + 3 / 5) / 3)
    assert average_precision(scores, np.ones(5)) == pytest.approx(1.0)
    # tied scores enter together: {0.9: pos, 0.5: pos, 0.5: neg} -> P = 1 at R = 1/2, 2/3 at R = 1
    assert average_precision([0.9, 0.5, 0.5], [1, 1, 0]) == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)
    assert average_precision([0.1, 0.2], [0, 0]) is None
    rng = np.random.default_rng(0)
    s, y = rng.normal(size=200).round(1), rng.random(200) < 0.3  # rounding makes ties
    from sklearn.metrics import average_precision_score
    assert average_precision(s, y) == pytest.approx(average_precision_score(y, s))


def test_quantile_thresholds_match_numpy():
    acts = np.asarray(jax.random.gamma(jax.random.key(0), 2.0, (40, 5, 6, 7)))
    t = np.asarray(quantile_thresholds(jnp.asarray(acts), 0.005))
    np.testing.assert_allclose(t, np.quantile(acts.reshape(-1, 7), 0.995, axis=0), rtol=1e-5)
    assert np.all(np.abs((acts > t).mean(axis=(0, 1, 2)) - 0.005) <= 1 / (40 * 30))
    with pytest.raises(ValueError, match="quantile"):
        quantile_thresholds(jnp.asarray(acts), 1.5)


def test_single_filter_iou_matches_numpy():
    rng = np.random.default_rng(1)
    acts = rng.random((6, 4, 4, 3)).astype(np.float32)  # same size as the masks: no upsampling
    masks = rng.random((6, 4, 4, 2)) < 0.3
    weights = rng.random((6, 2)) < 0.7
    t = np.array([0.5, 0.7, 0.9], np.float32)
    got = single_filter_iou(jnp.asarray(acts), jnp.asarray(t), masks, weights, batch_size=4)  # 2 batches, padded
    for c in range(2):
        keep = weights[:, c]
        for k in range(3):
            assert got[c, k] == pytest.approx(set_iou(acts[keep][..., k] > t[k], masks[keep][..., c]), abs=1e-6)


def test_single_filter_iou_upsamples_bilinearly():
    acts = np.zeros((1, 2, 2, 1), np.float32)
    acts[0, 1, 1, 0] = 1.0  # bottom-right cell of a 2x2 grid on a 4x4 image
    masks = np.zeros((1, 4, 4, 1), bool)
    masks[0, 2:, 2:, 0] = True
    # bilinear (half-pixel centres): pixel 3 -> 1, pixel 2 -> 0.75 on each axis, pixel 1 -> 0.25
    assert single_filter_iou(jnp.asarray(acts), jnp.asarray([0.5]), masks)[0, 0] == pytest.approx(1.0)
    # threshold 0.1: the product of the axis weights exceeds it on rows/cols 1..3 but at (1, 1)
    # (0.25 * 0.25): 8 px against 4, IoU 4/8
    assert single_filter_iou(jnp.asarray(acts), jnp.asarray([0.1]), masks)[0, 0] == pytest.approx(4 / 8)


def _toy_concepts(n=64, seed=0):
    """Binary filter maps on a 4x4 grid whose filters 0 / 1 mark the cells of two concepts on an 8x8 image."""
    rng = np.random.default_rng(seed)
    cells = rng.random((n, 4, 4, 2)) < 0.2
    noise = rng.random((n, 4, 4, 2)) < 0.1
    binary = np.concatenate([cells, noise], axis=-1).astype(np.float32)  # (n, 4, 4, 4)
    masks = np.repeat(np.repeat(cells, 2, axis=1), 2, axis=2)  # exact concept pixels, 8x8
    return binary, masks, masks.any(axis=(1, 2))


def test_probes_trained_together_equal_probes_trained_alone():
    binary, masks, labels = _toy_concepts()
    settings = ProbeSettings(steps=60, batch_size=16, learning_rate=0.1)
    key = jax.random.key(3)
    together = train_segmentation_probes(jnp.asarray(binary), masks, labels, settings, key)
    for c in range(2):
        alone = train_segmentation_probes(jnp.asarray(binary), masks, labels, settings, key, concepts=[c])
        np.testing.assert_allclose(np.asarray(together.weights[c]), np.asarray(alone.weights[0]), rtol=1e-4,
                                   atol=1e-5)
        np.testing.assert_allclose(np.asarray(together.bias[c]), np.asarray(alone.bias[0]), rtol=1e-4, atol=1e-5)
    # the probes learn their concept: each puts its largest weight on its own filter and segments it
    w = np.asarray(together.weights)
    assert w[0].argmax() == 0 and w[1].argmax() == 1
    iou = probe_iou(together, jnp.asarray(binary), masks, labels.astype(np.float32))
    assert np.all(iou > 0.8), iou
    # restricted to a filter that does not carry the concept, a probe cannot segment it
    wrong = train_segmentation_probes(jnp.asarray(binary), masks, labels, settings, key, concepts=[0],
                                      filters=np.array([[0, 0, 1, 0]], np.float32))
    assert np.asarray(wrong.weights)[0, [0, 1, 3]].tolist() == [0, 0, 0]
    assert probe_iou(wrong, jnp.asarray(binary), masks, labels.astype(np.float32))[0] < 0.3


def test_binarise_filter_counts_and_top_filters():
    acts = jnp.asarray(np.arange(8, dtype=np.float32).reshape(1, 2, 2, 2))
    np.testing.assert_array_equal(np.asarray(binarise(acts, jnp.asarray([3.0, 4.0]))).ravel(),
                                  [0, 0, 0, 0, 1, 1, 1, 1][:4] + [1, 1, 1, 1])
    assert filter_counts(16) == (1, 2, 3, 4, 6, 9, 14, 16)
    assert filter_counts(1) == (1,)
    masks = top_filter_masks(np.array([[0.1, -3.0, 2.0, 0.0]]), (1, 2))
    np.testing.assert_array_equal(masks[0], [[0, 1, 0, 0], [0, 1, 1, 0]])


def test_embedding_similarity_is_cosine():
    w = np.array([[1.0, 0.0], [2.0, 0.0], [0.0, -1.0], [0.0, 0.0]])
    sim = embedding_similarity(w)
    np.testing.assert_allclose(sim[:3, :3], [[1, 1, 0], [1, 1, 0], [0, 0, 1]], atol=1e-12)
    assert np.all(sim[3] == 0)


def _known_layer(n: int, seed: int):
    """Activations on a 4x4 grid (= the mask size: no upsampling) with known answers. Concept 0
    ("exact"): one cell on half the images, filter 0 fires exactly there. Concept 1 ("split"): two
    adjacent cells on the other half, filter 1 fires on the left one and filter 2 on the right one.
    Filter 3 is noise. Every filter is 0 off its cells, so with a quantile above each filter's share
    of positions its threshold is 0 and it fires exactly on its cells."""
    rng = np.random.default_rng(seed)
    acts = np.zeros((n, 4, 4, 4), np.float32)
    masks = np.zeros((n, 4, 4, 2), bool)
    for i in range(n):
        r, c = rng.integers(4), rng.integers(3)
        if i % 2 == 0:
            masks[i, r, c, 0] = True
            acts[i, r, c, 0] = rng.uniform(0.5, 1.5)
        else:
            masks[i, r, c:c + 2, 1] = True
            acts[i, r, c, 1], acts[i, r, c + 1, 2] = rng.uniform(0.5, 1.5, size=2)
    acts[..., 3] = rng.random((n, 4, 4))
    return acts, masks, masks.any(axis=(1, 2))


def test_analyse_layer_known_answers():
    from sklearn.metrics import average_precision_score

    from anatomy_jax.concepts import analyse_layer, classification_scores, train_classification_probes

    train, test = _known_layer(96, 0), _known_layer(48, 1)
    settings = ProbeSettings(steps=150, batch_size=16, learning_rate=0.1, quantile=0.25)
    found = analyse_layer(jnp.asarray(train[0]), train[1], train[2], jnp.asarray(test[0]), test[1], test[2], settings,
                          jax.random.key(0))
    np.testing.assert_array_equal(found.thresholds[:3], 0.0)  # off-cell zeros fill the top quantile's complement
    # the exact filter: single-filter IoU 1; the split concept: each half-filter covers half of it
    assert found.best_filter[0] == 0 and found.single_filter_iou[0] == pytest.approx(1.0)
    assert found.best_filter[1] in (1, 2) and found.single_filter_iou[1] == pytest.approx(0.5)
    np.testing.assert_allclose(found.filter_iou[1, 1:3], 0.5)
    # the learned combination recovers both, so it beats the single filter on the split concept
    assert found.combination_iou[0] >= 0.95 and found.combination_iou[1] >= 0.95, found.combination_iou
    assert found.combination_iou[1] > found.single_filter_iou[1] + 0.4
    w = found.weights
    assert w[0].argmax() == 0 and set(np.argsort(-w[1])[:2]) == {1, 2}
    # filters needed for 90 % of the combination: 1 for the exact concept, 2 (of 1, 2, 3, 4) for the split one
    assert found.filters_for_90.tolist() == [1, 2]
    # AP: the pooled half-filters separate the concepts' images exactly (AP 1); the probes' AP is
    # scikit-learn's on the same probes' scores
    np.testing.assert_allclose(found.single_filter_ap, 1.0)
    pooled_train, pooled_test = train[0].mean(axis=(1, 2)), test[0].mean(axis=(1, 2))
    scores = classification_scores(train_classification_probes(pooled_train, train[2], settings), pooled_test)
    for c in range(2):
        assert found.ap[c] == pytest.approx(average_precision_score(test[2][:, c], scores[:, c]))
    assert np.all(found.ap >= 0.99)


def test_filters_needed_hand_computed_and_none_when_never_reached():
    from anatomy_jax.concepts import filters_needed
    from anatomy_jax.concepts.net2vec import LayerConcepts
    from anatomy_jax.experiment.net2vec import _layer_entry

    counts = (1, 2, 4, 8)
    combination = np.array([0.8, 0.8, 0.5, 0.0, np.nan])
    subsets = np.array([[0.5, 0.75, 0.79, 0.8],  # 90 % of 0.8 = 0.72: reached at 2
                        [0.1, 0.2, 0.7, 0.71],  # the retrained all-filter probe falls short of 0.72: never
                        [0.46, np.nan, 0.5, 0.5],  # reached at 1 (0.46 >= 0.45)
                        [0.3, 0.3, 0.3, 0.3],  # nothing to reach (IoU 0)
                        [0.3, 0.3, 0.3, 0.3]])
    assert filters_needed(combination, subsets, counts, 0.9).tolist() == [2, -1, 1, -1, -1]
    with pytest.raises(ValueError, match="ascending"):
        filters_needed(combination, subsets, (4, 2, 1, 8))
    # in results.json, -1 is null
    nan = np.full(2, np.nan)
    found = LayerConcepts(np.zeros(3), np.zeros((2, 3)), np.array([0, 1]), np.array([0.2, 0.3]),
                          np.array([0.8, 0.8]), np.zeros((2, 3)), np.array([2, -1]), nan, nan)
    assert _layer_entry(found, 0, 3)["filters_for_90"] == 2
    entry = _layer_entry(found, 1, 3)
    assert entry["filters_for_90"] is None and entry["ap"] is None
    import json
    assert json.loads(json.dumps(entry, allow_nan=False))["filters_for_90"] is None
