"""Net2Vec (Fong & Vedaldi, CVPR 2018): how concepts are encoded across a layer's filters.

For a layer's activations A (n, h, w, K) and concept masks L (n, H, W, C):

* per-filter thresholds T_k: the top-`quantile` (0.5 %) level of filter k's activations over
  all images and positions (`quantile_thresholds`, Network Dissection's);
* single filter (Network Dissection): filter k's mask is upsample(A_k) > T_k (bilinear to the
  image), scored by the set IoU sum_x |M(x) & L(x)| / sum_x |M(x) | L(x)| (`single_filter_iou`);
* learned combination: a segmentation probe M(x) = sigmoid(upsample(sum_k w_k B_k(x) + b)) on the
  binarised activations B_k = [A_k > T_k] (as the reference code), trained with the paper's
  alpha-weighted loss  -1/N sum_x sum_pixels [alpha L M + (1 - alpha)(1 - L)(1 - M)],  alpha = 1 -
  the mean share of concept pixels, and scored by the set IoU of M > 0.5;
* classification probes: sigmoid(w . meanpool(A) + b) with the alpha-weighted cross entropy,
  scored by average precision (`average_precision`);
* filters a concept needs: probes restricted to the top-k filters by |w| of the full probe
  (retrained, as the reference's `num_filters` masks), the least k reaching 90 % of its IoU
  (`filters_needed`; -1, None in results, where no k reaches it);
* concept embeddings: the probe weights w_c; `embedding_similarity` gives their cosines.

As in the reference code, each concept's segmentation probe trains on (and, with
`concept_images=True`, is scored on) the images that contain the concept; the single filters are
scored on the same images. All probes of a layer train at once: one jitted `lax.scan` of Adam
steps `vmap`ped over probes (concepts, or concept x filter subset). Deviation from the paper:
Adam instead of SGD 1e-4 with momentum (the loss scale depends on the image size; Adam does not).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple, Sequence

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax

QUANTILE = 0.005  # Network Dissection's top 0.5 %
FRACTION = 0.9  # "filters needed for 90 % of the combination's IoU"
PROBE_INPUTS = ("binary", "raw")


@dataclasses.dataclass(frozen=True)
class ProbeSettings:
    """How the probes train (the paper: SGD 1e-4, momentum 0.9, batch 64, 30 epochs)."""

    steps: int = 300  # Adam steps of every probe
    batch_size: int = 64  # images per step (each probe draws from the images with its concept)
    learning_rate: float = 0.05
    bias: bool = True  # a learned bias (the reference's `bias` option; it sharpens the upsampled mask)
    concept_images: bool = True  # train and score each concept on the images that contain it (paper)
    quantile: float = QUANTILE
    classifier_steps: int = 300  # full-batch Adam steps of the classification probes
    inputs: str = "binary"  # probe inputs: binary [A_k > T_k] (reference code) or raw A_k / T_k

    def probe_inputs(self, acts: jax.Array, thresholds: jax.Array) -> jax.Array:
        """What the segmentation probes see: `binarise(acts)` or the activations scaled by T_k."""
        if self.inputs == "binary":
            return binarise(acts, thresholds)
        return jnp.asarray(acts, jnp.float32) / jnp.where(thresholds > 0, thresholds, 1.0)

    def validate(self) -> None:
        for name in ("steps", "batch_size", "classifier_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"probe {name} must be >= 1, got {getattr(self, name)}")
        if not self.learning_rate > 0:
            raise ValueError(f"probe learning_rate must be > 0, got {self.learning_rate}")
        if not 0.0 < self.quantile < 1.0:
            raise ValueError(f"quantile must lie in (0, 1), got {self.quantile}")
        if self.inputs not in PROBE_INPUTS:
            raise ValueError(f"unknown probe inputs {self.inputs!r}; choose one of {', '.join(PROBE_INPUTS)}")


# ---- thresholds, upsampling, set IoU, AP ----------------------------------------------------


def quantile_thresholds(acts: jax.Array, quantile: float = QUANTILE) -> jax.Array:
    """(K,) per-filter levels T_k with a share `quantile` of filter k's activations (all images and
    positions of (n, h, w, K)) above them: numpy's (linear) quantile at 1 - quantile."""
    chex.assert_rank(acts, 4)
    if not 0.0 < quantile < 1.0:
        raise ValueError(f"quantile must lie in (0, 1), got {quantile}")
    return jnp.quantile(jnp.asarray(acts, jnp.float32).reshape(-1, acts.shape[-1]), 1.0 - quantile, axis=0)


def upsample(x: jax.Array, size: tuple[int, int]) -> jax.Array:
    """(n, h, w, K) -> (n, H, W, K) by bilinear interpolation (half-pixel centres, as PyTorch's
    `Upsample(mode='bilinear')` without corner alignment); the identity when sizes agree."""
    chex.assert_rank(x, 4)
    if tuple(x.shape[1:3]) == tuple(size):
        return x
    return jax.image.resize(x, (x.shape[0], *size, x.shape[-1]), "linear")


def set_iou(pred: np.ndarray, target: np.ndarray) -> float | None:
    """Set IoU of two boolean mask stacks: all their pixels pooled (None when both are empty)."""
    pred, target = np.asarray(pred, bool), np.asarray(target, bool)
    if pred.shape != target.shape:
        raise ValueError(f"pred {pred.shape} and target {target.shape} differ in shape")
    union = np.logical_or(pred, target).sum()
    return None if union == 0 else float(np.logical_and(pred, target).sum() / union)


def average_precision(scores: np.ndarray, labels: np.ndarray) -> float | None:
    """Average precision sum_i (R_i - R_{i-1}) P_i over the distinct score thresholds, highest first
    (scikit-learn's definition; tied scores enter together). None without positives."""
    scores, labels = np.asarray(scores, np.float64).ravel(), np.asarray(labels, bool).ravel()
    if scores.shape != labels.shape:
        raise ValueError(f"scores {scores.shape} and labels {labels.shape} differ in shape")
    positives = labels.sum()
    if positives == 0:
        return None
    order = np.argsort(-scores, kind="stable")
    s, y = scores[order], labels[order]
    tp, fp = np.cumsum(y), np.cumsum(~y)
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]  # the last index of each distinct score
    precision, recall = tp[last] / (tp[last] + fp[last]), tp[last] / positives
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def concept_weights(labels: np.ndarray, concept_images: bool) -> np.ndarray:
    """(n, C) float: which images count for each concept (its own images, or all)."""
    labels = np.asarray(labels, bool)
    return labels.astype(np.float32) if concept_images else np.ones(labels.shape, np.float32)


def _batches(n: int, batch_size: int):
    for start in range(0, n, batch_size):
        yield start, min(n, start + batch_size)


def _pad(x: np.ndarray, size: int) -> np.ndarray:
    return x if len(x) == size else np.concatenate([x, np.zeros((size - len(x), *x.shape[1:]), x.dtype)])


@functools.partial(jax.jit, static_argnames=("size",))
def _filter_counts(acts, thresholds, masks, use, size):
    fired = (upsample(acts, size) > thresholds).astype(jnp.float32)  # (b, H, W, K)
    target = masks.astype(jnp.float32)  # (b, H, W, C)
    inter = jnp.einsum("bhwk,bhwc,bc->ck", fired, target, use)
    fired_total = jnp.einsum("bk,bc->ck", fired.sum(axis=(1, 2)), use)
    target_total = jnp.einsum("bc,bc->c", target.sum(axis=(1, 2)), use)
    return inter, fired_total, target_total


def single_filter_iou(acts: jax.Array, thresholds: jax.Array, masks: np.ndarray, weights: np.ndarray | None = None,
                      batch_size: int = 256) -> np.ndarray:
    """(C, K) set IoU of each filter's mask upsample(A_k) > T_k with each concept, over the images
    with weight 1 for that concept (`weights` (n, C), default all). NaN where the union is empty."""
    chex.assert_rank(acts, 4)
    chex.assert_rank(masks, 4)
    n, size = acts.shape[0], tuple(masks.shape[1:3])
    chex.assert_equal(masks.shape[0], n)
    weights = np.ones((n, masks.shape[-1]), np.float32) if weights is None else np.asarray(weights, np.float32)
    chex.assert_shape(weights, (n, masks.shape[-1]))
    chex.assert_shape(thresholds, (acts.shape[-1],))
    b = min(batch_size, n)
    inter = fired = total = 0.0
    for start, stop in _batches(n, b):
        i, f, t = _filter_counts(_pad(np.asarray(acts[start:stop]), b), thresholds, _pad(masks[start:stop], b),
                                 _pad(weights[start:stop], b), size)
        inter, fired, total = inter + np.asarray(i), fired + np.asarray(f), total + np.asarray(t)
    union = fired + total[:, None] - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / np.maximum(union, 1e-12), np.nan)


# ---- segmentation probes ----------------------------------------------------------------


class SegmentationProbes(NamedTuple):
    """P probes over K filters: probe p segments concept `concepts[p]` using the filters in `filters[p]`."""

    weights: jax.Array  # (P, K): the concept embeddings
    bias: jax.Array  # (P,)
    concepts: jax.Array  # (P,) int: concept axis index of each probe
    filters: jax.Array  # (P, K) float 0/1: the filters a probe may use


def segmentation_alpha(masks: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """(C,) the paper's alpha = 1 - the mean share of concept pixels over the counted images."""
    share = np.asarray(masks, np.float32).mean(axis=(1, 2))  # (n, C)
    weights = np.asarray(weights, np.float32)
    return 1.0 - (share * weights).sum(0) / np.maximum(weights.sum(0), 1.0)


def _logits(w, b, x, size):
    """Pre-sigmoid maps (B, H, W) of one probe on binarised activations x (B, h, w, K)."""
    z = jnp.einsum("bhwk,k->bhw", x, w) + b
    return upsample(z[..., None], size)[..., 0]


def _probe_loss(params, x, target, alpha, filters, use_bias, size):
    w, b = params
    m = jax.nn.sigmoid(_logits(w * filters, b * use_bias, x, size))
    per_image = (alpha * target * m + (1.0 - alpha) * (1.0 - target) * (1.0 - m)).sum(axis=(1, 2))
    return -per_image.mean()


@functools.partial(jax.jit, static_argnames=("steps", "batch_size", "learning_rate", "use_bias"))
def _train_probes(keys, w0, filters, concepts, alpha, weights, binary, masks, *, steps, batch_size, learning_rate,
                  use_bias):
    size = masks.shape[1:3]
    n = binary.shape[0]
    opt = optax.adam(learning_rate)

    def train_one(key, w, f, c, a):
        p = weights[:, c]
        p = jnp.where(p.sum() > 0, p, jnp.ones_like(p))
        params = (w, jnp.zeros((), jnp.float32))

        def step(carry, t):
            params, state = carry
            idx = jax.random.choice(jax.random.fold_in(key, t), n, (batch_size,), p=p / p.sum())
            target = masks[idx, ..., c].astype(jnp.float32)
            grads = jax.grad(_probe_loss)(params, binary[idx], target, a, f, float(use_bias), size)
            updates, state = opt.update(grads, state, params)
            return (optax.apply_updates(params, updates), state), None

        (params, _), _ = jax.lax.scan(step, (params, opt.init(params)), jnp.arange(steps))
        return params[0] * f, params[1] * float(use_bias)

    return jax.vmap(train_one)(keys, w0, filters, concepts, alpha[concepts])


def binarise(acts: jax.Array, thresholds: jax.Array) -> jax.Array:
    """B_k = [A_k > T_k] as float32 (the probes' input)."""
    chex.assert_rank(acts, 4)
    chex.assert_shape(thresholds, (acts.shape[-1],))
    return (jnp.asarray(acts) > thresholds).astype(jnp.float32)


def train_segmentation_probes(binary: jax.Array, masks: np.ndarray, labels: np.ndarray, settings: ProbeSettings,
                              key: jax.Array, *, concepts: Sequence[int] | None = None,
                              filters: np.ndarray | None = None, keys: jax.Array | None = None
                              ) -> SegmentationProbes:
    """Trains one probe per entry of `concepts` (default: every concept) at once (vmapped).

    binary: (n, h, w, K) binarised activations; masks: (n, H, W, C) bool; labels: (n, C) bool.
    `filters` (P, K) restricts each probe to some filters (default: all). Probe p starts from
    weights uniform in +-1/sqrt(K) drawn with `keys[p]` (default fold_in(key, concept)), so a probe
    trained alone equals the same probe trained with others."""
    settings.validate()
    chex.assert_rank(binary, 4)
    chex.assert_rank(masks, 4)
    n, k = binary.shape[0], binary.shape[-1]
    num_concepts = masks.shape[-1]
    chex.assert_equal(masks.shape[0], n)
    chex.assert_shape(labels, (n, num_concepts))
    concepts = np.arange(num_concepts) if concepts is None else np.asarray(concepts, np.int32)
    if concepts.ndim != 1 or len(concepts) == 0 or concepts.min() < 0 or concepts.max() >= num_concepts:
        raise ValueError(f"concepts must be indices in [0, {num_concepts}), got {concepts.tolist()}")
    filters = np.ones((len(concepts), k), np.float32) if filters is None else np.asarray(filters, np.float32)
    chex.assert_shape(filters, (len(concepts), k))
    if keys is None:
        keys = jax.vmap(lambda c: jax.random.fold_in(key, c))(jnp.asarray(concepts))
    bound = 1.0 / np.sqrt(k)
    w0 = jax.vmap(lambda kk: jax.random.uniform(jax.random.split(kk)[1], (k,), minval=-bound, maxval=bound))(keys)
    weights = concept_weights(labels, settings.concept_images)
    alpha = segmentation_alpha(masks, weights)
    w, b = _train_probes(keys, w0, jnp.asarray(filters), jnp.asarray(concepts), jnp.asarray(alpha),
                         jnp.asarray(weights), jnp.asarray(binary, jnp.float32), jnp.asarray(masks),
                         steps=settings.steps, batch_size=settings.batch_size,
                         learning_rate=settings.learning_rate, use_bias=settings.bias)
    return SegmentationProbes(w, b, jnp.asarray(concepts), jnp.asarray(filters))


@functools.partial(jax.jit, static_argnames=("size",))
def _probe_counts(w, b, concepts, binary, masks, use, size):
    z = jnp.einsum("bhwk,pk->bhwp", binary, w) + b
    pred = (upsample(z, size) > 0).astype(jnp.float32)  # sigmoid > 0.5
    target = masks[..., concepts].astype(jnp.float32)  # (b, H, W, P)
    u = use[:, concepts]  # (b, P)
    inter = jnp.einsum("bhwp,bp->p", pred * target, u)
    union = jnp.einsum("bhwp,bp->p", jnp.maximum(pred, target), u)
    return inter, union


def probe_iou(probes: SegmentationProbes, binary: jax.Array, masks: np.ndarray, weights: np.ndarray | None = None,
              batch_size: int = 256) -> np.ndarray:
    """(P,) set IoU of each probe's mask sigmoid(...) > 0.5 with its concept over the images with
    weight 1 for that concept (`weights` (n, C), default all); NaN where the union is empty."""
    chex.assert_rank(binary, 4)
    n, size = binary.shape[0], tuple(masks.shape[1:3])
    weights = np.ones((n, masks.shape[-1]), np.float32) if weights is None else np.asarray(weights, np.float32)
    b = min(batch_size, n)
    inter = union = 0.0
    for start, stop in _batches(n, b):
        i, u = _probe_counts(probes.weights, probes.bias, probes.concepts, _pad(np.asarray(binary[start:stop]), b),
                             _pad(masks[start:stop], b), _pad(weights[start:stop], b), size)
        inter, union = inter + np.asarray(i), union + np.asarray(u)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / np.maximum(union, 1e-12), np.nan)


# ---- classification probes --------------------------------------------------------------


class ClassificationProbes(NamedTuple):
    weights: jax.Array  # (C, K) on standardised mean-pooled activations
    bias: jax.Array  # (C,)
    mean: jax.Array  # (K,) standardisation of the pooled activations (training statistics)
    scale: jax.Array  # (K,)


@functools.partial(jax.jit, static_argnames=("steps", "learning_rate"))
def _train_classifiers(x, y, alpha, *, steps, learning_rate):
    opt = optax.adam(learning_rate)

    def train_one(target, a):
        def loss(params):
            logit = x @ params[0] + params[1]
            return -jnp.mean(a * target * jax.nn.log_sigmoid(logit) + (1 - a) * (1 - target) * jax.nn.log_sigmoid(-logit))

        def step(carry, _):
            params, state = carry
            updates, state = opt.update(jax.grad(loss)(params), state, params)
            return (optax.apply_updates(params, updates), state), None

        params = (jnp.zeros(x.shape[1]), jnp.zeros(()))
        (params, _), _ = jax.lax.scan(step, (params, opt.init(params)), None, length=steps)
        return params

    return jax.vmap(train_one, in_axes=(1, 0))(y, alpha)


def train_classification_probes(pooled: jax.Array, labels: np.ndarray, settings: ProbeSettings
                                ) -> ClassificationProbes:
    """One logistic probe per concept on mean-pooled activations (n, K), all at once (vmapped),
    with the alpha-weighted cross entropy (alpha = 1 - the concept's share of images)."""
    settings.validate()
    chex.assert_rank(pooled, 2)
    chex.assert_shape(labels, (pooled.shape[0], None))
    x = jnp.asarray(pooled, jnp.float32)
    mean, scale = x.mean(0), x.std(0) + 1e-6
    y = jnp.asarray(labels, jnp.float32)
    w, b = _train_classifiers((x - mean) / scale, y, 1.0 - y.mean(0), steps=settings.classifier_steps,
                              learning_rate=settings.learning_rate)
    return ClassificationProbes(w, b, mean, scale)


def classification_scores(probes: ClassificationProbes, pooled: jax.Array) -> np.ndarray:
    """(n, C) logits of the classification probes."""
    return np.asarray(((jnp.asarray(pooled) - probes.mean) / probes.scale) @ probes.weights.T + probes.bias)


# ---- embeddings and the per-layer analysis ----------------------------------------------


def embedding_similarity(weights: jax.Array) -> np.ndarray:
    """(C, C) cosine similarities of concept embeddings (rows of `weights`); 0 for a zero row."""
    w = np.asarray(weights, np.float64)
    chex.assert_rank(w, 2)
    norm = np.linalg.norm(w, axis=1, keepdims=True)
    unit = np.divide(w, norm, out=np.zeros_like(w), where=norm > 0)
    return unit @ unit.T


def filter_counts(num_filters: int) -> tuple[int, ...]:
    """The subset sizes tried for the filters a concept needs: 1, 2, 3, 4, 6, 8, 12, 16, ... up to K."""
    out, k = [], 1
    while k < num_filters:
        out.append(k)
        k = k + 1 if k < 4 else int(round(k * 1.5))
    return tuple(sorted(set(out + [num_filters])))


def top_filter_masks(weights: np.ndarray, counts: Sequence[int]) -> np.ndarray:
    """(C, len(counts), K) 0/1: each concept's top-k filters by |w| (ties by filter index)."""
    w = np.abs(np.asarray(weights))
    order = np.argsort(-w, axis=1, kind="stable")
    out = np.zeros((w.shape[0], len(counts), w.shape[1]), np.float32)
    for j, k in enumerate(counts):
        np.put_along_axis(out[:, j], order[:, :k], 1.0, axis=1)
    return out


def filters_needed(combination_iou: np.ndarray, subset_iou: np.ndarray, counts: Sequence[int],
                   fraction: float = FRACTION) -> np.ndarray:
    """(C,) int: the least count k (of `counts`, ascending) whose top-k probe's IoU `subset_iou[c, j]`
    reaches `fraction` of the combination's IoU; -1 where it is never reached (even the probe on
    all K filters, retrained from another start, can fall short) or the combination's IoU is 0 or
    NaN (nothing to reach)."""
    combination_iou = np.asarray(combination_iou, np.float64)
    subset_iou = np.asarray(subset_iou, np.float64)
    chex.assert_shape(subset_iou, (len(combination_iou), len(counts)))
    if list(counts) != sorted(counts):
        raise ValueError(f"counts must be ascending, got {list(counts)}")
    out = np.full(len(combination_iou), -1)
    for c, target in enumerate(combination_iou):
        if np.isfinite(target) and target > 0:
            reached = [n for n, v in zip(counts, subset_iou[c]) if np.isfinite(v) and v >= fraction * target]
            out[c] = reached[0] if reached else -1
    return out


class LayerConcepts(NamedTuple):
    """Net2Vec results of one layer over C concepts (test split; NaN where a concept is absent)."""

    thresholds: np.ndarray  # (K,)
    filter_iou: np.ndarray  # (C, K) test IoU of every filter
    best_filter: np.ndarray  # (C,) the single filter with the best training IoU
    single_filter_iou: np.ndarray  # (C,) its test IoU
    combination_iou: np.ndarray  # (C,) the learned combination's test IoU
    weights: np.ndarray  # (C, K) concept embeddings
    filters_for_90: np.ndarray  # (C,) int, -1 where not computed, no IoU, or 90 % never reached
    ap: np.ndarray  # (C,) classification probe AP
    single_filter_ap: np.ndarray  # (C,) AP of the best single pooled filter (chosen on training data)


def analyse_layer(train_acts: jax.Array, train_masks: np.ndarray, train_labels: np.ndarray, test_acts: jax.Array,
                  test_masks: np.ndarray, test_labels: np.ndarray, settings: ProbeSettings, key: jax.Array, *,
                  concepts: Sequence[int] | None = None, fraction: float | None = FRACTION,
                  classify: bool = True) -> LayerConcepts:
    """Everything Net2Vec measures for one layer: thresholds from the training activations,
    probes trained on them and scored on the test split. `concepts` (default all) limits the
    work (the other rows are NaN); `fraction=None` skips the filters-needed search and
    `classify=False` the classification probes."""
    settings.validate()
    chex.assert_rank(train_acts, 4)
    chex.assert_rank(test_acts, 4)
    if fraction is not None and not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must lie in (0, 1], got {fraction}")
    num_concepts, k = train_masks.shape[-1], train_acts.shape[-1]
    concepts = np.arange(num_concepts) if concepts is None else np.asarray(concepts, np.int32)
    thresholds = quantile_thresholds(train_acts, settings.quantile)
    w_train = concept_weights(train_labels, settings.concept_images)
    w_test = concept_weights(test_labels, settings.concept_images)
    nan = np.full(num_concepts, np.nan)
    train_filter_iou = single_filter_iou(train_acts, thresholds, train_masks, w_train)
    filter_iou = single_filter_iou(test_acts, thresholds, test_masks, w_test)
    best = np.nan_to_num(train_filter_iou, nan=-1.0).argmax(axis=1)
    single = filter_iou[np.arange(num_concepts), best]
    b_train, b_test = settings.probe_inputs(train_acts, thresholds), settings.probe_inputs(test_acts, thresholds)
    probes = train_segmentation_probes(b_train, train_masks, train_labels, settings, key, concepts=concepts)
    combination, weights = nan.copy(), np.full((num_concepts, k), np.nan)
    combination[concepts] = probe_iou(probes, b_test, test_masks, w_test)
    weights[concepts] = np.asarray(probes.weights)
    needed = np.full(num_concepts, -1)
    if fraction is not None:
        counts = filter_counts(k)
        masks = top_filter_masks(weights[concepts], counts)  # (c, m, K)
        probe_concepts = np.repeat(concepts, len(counts))
        keys = jnp.stack([jax.random.fold_in(jax.random.fold_in(key, int(c)), j)
                          for c in concepts for j in range(len(counts))])
        subsets = train_segmentation_probes(b_train, train_masks, train_labels, settings, key,
                                            concepts=probe_concepts, filters=masks.reshape(-1, k), keys=keys)
        iou = probe_iou(subsets, b_test, test_masks, w_test).reshape(len(concepts), len(counts))
        needed[concepts] = filters_needed(combination[concepts], iou, counts, fraction)
    ap, single_ap = nan.copy(), nan.copy()
    if classify:
        pooled_train, pooled_test = np.asarray(train_acts).mean(axis=(1, 2)), np.asarray(test_acts).mean(axis=(1, 2))
        classifiers = train_classification_probes(pooled_train, train_labels, settings)
        scores = classification_scores(classifiers, pooled_test)
        for c in concepts:
            ap[c] = _or_nan(average_precision(scores[:, c], test_labels[:, c]))
            train_ap = [_or_nan(average_precision(pooled_train[:, j], train_labels[:, c])) for j in range(k)]
            j = int(np.nan_to_num(np.asarray(train_ap), nan=-1.0).argmax())
            single_ap[c] = _or_nan(average_precision(pooled_test[:, j], test_labels[:, c]))
    return LayerConcepts(np.asarray(thresholds), filter_iou, best, single, combination, weights, needed, ap, single_ap)


def _or_nan(value: float | None) -> float:
    return np.nan if value is None else value
