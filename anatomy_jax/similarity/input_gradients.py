"""Input gradients (saliency) of nets, and how much two nets' saliency agrees.

The gradient is that of the true class's log-probability, log softmax(f(x))_y, with respect to the
input x (the [0, 1] image the model sees): minus the gradient of the cross entropy, i.e. the
direction that most raises the net's confidence in the right answer (FGSM/PGD step against it).
The log-probability rather than the raw logit, because it depends only on the net's predicted
distribution: adding the same function to every logit (which changes no prediction) leaves it
unchanged. For a linear model f(x) = W x + b it is W_y - sum_k softmax(f(x))_k W_k.

Two nets' saliency agrees to the extent that their gradients point the same way on the same
images: `saliency_cosine` is the mean over images of the cosine between the flattened gradients,
and `saliency_cosine_matrix` the (m, m) matrix of it over m nets (e.g. for `mantel_test` against a
transfer matrix).
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

import chex
import jax
import jax.numpy as jnp
import numpy as np


@functools.partial(jax.jit, static_argnums=0)
def _batch_gradients(apply_fn: Callable, params: Any, x: jax.Array, y: jax.Array) -> jax.Array:
    """d/dx of sum_i log softmax(f(x_i))_{y_i}: per-example gradients when examples don't interact."""

    def total(z):
        logits = apply_fn(z) if params is None else apply_fn(params, z)
        log_p = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
        return jnp.sum(jnp.take_along_axis(log_p, y[:, None], axis=1))

    return jax.grad(total)(x)


def input_gradients(apply_fn: Callable[..., jax.Array], images: np.ndarray, labels: np.ndarray, *,
                    params: Any = None, batch_size: int = 256) -> np.ndarray:
    """(n, H, W, C) float32 gradients of log softmax(apply_fn(x))[label] with respect to each image.

    `apply_fn(x) -> logits` (or `apply_fn(params, x)` when `params` is given: the parameters are
    then an argument of the compiled program rather than constants baked into it, which keeps
    compilation fast for large nets). It must treat examples independently (eval mode, no batch
    statistics). uint8 images are scaled to [0, 1] first; float images are used as they are. Jitted
    per batch of `batch_size`; the last batch is padded so one compiled shape serves the dataset.
    """
    images, labels = np.asarray(images), np.asarray(labels)
    chex.assert_rank(images, 4)
    chex.assert_shape(labels, (images.shape[0],))
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    n = images.shape[0]
    if n == 0:
        return np.zeros(images.shape, np.float32)
    x_all = images.astype(np.float32) / 255.0 if images.dtype == np.uint8 else images.astype(np.float32)
    size = min(batch_size, n)
    probe = jax.ShapeDtypeStruct((size, *images.shape[1:]), jnp.float32)
    logits = jax.eval_shape(lambda x: apply_fn(x) if params is None else apply_fn(params, x), probe)
    num_classes = logits.shape[-1]
    if labels.min() < 0 or labels.max() >= num_classes:
        raise ValueError(f"labels must be in [0, {num_classes}), got values in [{labels.min()}, {labels.max()}]")
    out = []
    for start in range(0, n, size):
        x, y = x_all[start:start + size], labels[start:start + size].astype(np.int32)
        real = len(x)
        if real < size:  # pad: one compiled shape for the whole dataset
            x = np.concatenate([x, np.zeros((size - real, *x.shape[1:]), x.dtype)])
            y = np.concatenate([y, np.zeros(size - real, y.dtype)])
        out.append(np.asarray(_batch_gradients(apply_fn, params, jnp.asarray(x), jnp.asarray(y)))[:real])
    return np.concatenate(out)


def _unit_rows(grads: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Flattened gradients scaled to unit length (float32), and which rows are nonzero."""
    g = np.asarray(grads)
    if g.ndim < 2 or g.shape[0] == 0:
        raise ValueError(f"{name} must be (n, ...) with n >= 1 images, got shape {g.shape}")
    flat = g.reshape(g.shape[0], -1)
    if not np.isfinite(flat).all():
        raise ValueError(f"{name} has {int((~np.isfinite(flat)).sum())} non-finite entries")
    norms = np.linalg.norm(flat.astype(np.float64), axis=1)
    nonzero = norms > 0
    unit = (flat / np.where(nonzero, norms, 1.0)[:, None]).astype(np.float32)
    return unit, nonzero


def _mean_cosine(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]) -> float:
    """Mean over images nonzero in both of the dot product of unit rows; NaN when there are none."""
    (ua, ok_a), (ub, ok_b) = a, b
    ok = ok_a & ok_b
    if not ok.any():
        return float("nan")
    cos = np.clip((ua[ok] * ub[ok]).sum(axis=1, dtype=np.float64), -1.0, 1.0)
    return float(cos.mean())


def saliency_cosine(grads_a: np.ndarray, grads_b: np.ndarray) -> float:
    """Mean over images of the cosine between two nets' flattened input gradients (n, ...).

    1 for the same saliency, invariant to positive rescaling of either net's gradient per image.
    Images where either gradient is exactly zero (e.g. a saturated softmax) have no direction and
    are left out; NaN when no image is left.
    """
    a, b = np.asarray(grads_a), np.asarray(grads_b)
    if a.shape != b.shape:
        raise ValueError(f"grads_a and grads_b must have the same shape, got {a.shape} and {b.shape}")
    return _mean_cosine(_unit_rows(a, "grads_a"), _unit_rows(b, "grads_b"))


def saliency_cosine_matrix(grads: Sequence[np.ndarray]) -> np.ndarray:
    """(m, m) float64 matrix of `saliency_cosine` between m nets' gradients on the same images
    (symmetric; the diagonal is 1 up to rounding, NaN for a net whose gradients are all zero)."""
    if len(grads) < 1:
        raise ValueError("grads must hold at least one net's gradients")
    shapes = {np.shape(g) for g in grads}
    if len(shapes) != 1:
        raise ValueError(f"every net's gradients must have the same shape, got {sorted(shapes)}")
    units = [_unit_rows(g, f"grads[{k}]") for k, g in enumerate(grads)]
    m = len(units)
    out = np.empty((m, m))
    for i in range(m):
        for j in range(i, m):
            out[i, j] = out[j, i] = _mean_cosine(units[i], units[j])
    return out
