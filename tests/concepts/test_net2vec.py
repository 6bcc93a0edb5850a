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
