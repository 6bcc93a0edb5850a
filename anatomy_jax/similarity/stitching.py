"""Model stitching: net A's representation at a layer, mapped linearly into net B's representation
at the matching layer, then the rest of net B (Lenc & Vedaldi 2015; Bansal et al. 2021).

Two kinds of map (`conv` selects):

* flattened (`conv=False`): h_a (n, d_a) flattened, W (d_a, d_b), b (d_b,); `h_a @ W + b` is
  reshaped to B's representation shape `shape_b` (any layer, dense or convolutional);
* 1x1 convolution (`conv=True`): h_a (n, H_a, W_a, c_a), W (c_a, c_b), b (c_b,); A's map is resized to
  B's spatial size (`resize_spatial`) and every position mapped by the same W (`fit_conv_map`).

Either map can come from least squares (`fit_linear_map`, `fit_conv_map`) or be trained on the task
loss through the frozen net B (`train_stitch`, Bansal et al. 2021), usually from the least-squares fit.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from anatomy_jax.similarity.conv_map import apply_conv_map, resize_factors


def _stitched_input(h: jax.Array, w: jax.Array, b: jax.Array, shape: tuple[int, ...], conv: bool) -> jax.Array:
    """A's representation mapped into B's representation at the layer: (n, *shape)."""
    if conv:
        return apply_conv_map(h, w, b, shape[:2])
    return (h @ w + b).reshape((h.shape[0], *shape))


def _stitched_logits(model_b: nn.Module, variables_b: Any, layer: str, shape: tuple[int, ...], conv: bool,
                     h: jax.Array, w: jax.Array, b: jax.Array) -> jax.Array:
    """Net B's logits from the stages after `layer`, run on the mapped representation (eval mode)."""
    return model_b.apply(variables_b, _stitched_input(h, w, b, shape, conv), start_after=layer)


@functools.partial(jax.jit, static_argnums=(0, 2, 3, 4))
def _rest_of_b(model_b: nn.Module, variables_b: Any, layer: str, shape: tuple[int, ...], conv: bool, h: jax.Array,
               w, b, labels):
    """(predictions, per-example cross-entropy) of the stitched net on one batch."""
    logits = _stitched_logits(model_b, variables_b, layer, shape, conv, h, w, b)
    return logits.argmax(-1), optax.softmax_cross_entropy_with_integer_labels(logits, labels)


def _check_map(h_a: Any, w: Any, b: Any, shape_b: tuple[int, ...], conv: bool) -> None:
    """ValueError unless (w, b) takes h_a into B's representation of shape `shape_b`."""
    if conv:
        if len(np.shape(h_a)) != 4 or len(shape_b) != 3:
            raise ValueError(f"a 1x1-conv map needs h_a (n, H, W, c) and a (H, W, c) shape_b, got h_a "
                             f"{tuple(np.shape(h_a))} and shape_b {tuple(shape_b)} (reshape flattened "
                             "representations with `representation_shape`)")
        if w.shape != (h_a.shape[-1], shape_b[-1]) or b.shape != (shape_b[-1],):
            raise ValueError(f"conv map {tuple(w.shape)} with bias {tuple(b.shape)} does not take {h_a.shape[-1]} "
                             f"channels to {shape_b[-1]}")
        resize_factors(tuple(h_a.shape[1:3]), tuple(shape_b[:2]))
    elif len(np.shape(h_a)) != 2 or h_a.shape[1] != w.shape[0] or int(np.prod(shape_b)) != w.shape[1] \
            or b.shape != (w.shape[1],):
        raise ValueError(f"map {tuple(w.shape)} with bias {tuple(b.shape)} does not take "
                         f"{tuple(np.shape(h_a))[1:]} features to {tuple(shape_b)} (a flattened map needs h_a (n, d))")


def _evaluate(model_b, variables_b, layer, h_a, w, b, shape_b, labels, batch_size, conv):
    """(predictions, per-example losses) over the whole of h_a, in batches."""
    w, b = jnp.asarray(w, jnp.float32), jnp.asarray(b, jnp.float32)
    _check_map(h_a, w, b, tuple(shape_b), conv)
    labels = np.zeros(len(h_a), np.int32) if labels is None else np.asarray(labels)
    if len(labels) != len(h_a):
        raise ValueError(f"{len(labels)} labels for {len(h_a)} representations")
    out = [jax.device_get(_rest_of_b(model_b, variables_b, layer, tuple(shape_b), conv,
                                     jnp.asarray(h_a[i:i + batch_size], jnp.float32), w, b,
                                     jnp.asarray(labels[i:i + batch_size])))
           for i in range(0, len(h_a), batch_size)]
    return np.concatenate([o[0] for o in out]), np.concatenate([o[1] for o in out])


def stitched_predictions(model_b: nn.Module, variables_b: Any, layer: str, h_a: np.ndarray, w: jax.Array,
                         b: jax.Array, shape_b: tuple[int, ...], batch_size: int = 500, *,
                         conv: bool = False) -> np.ndarray:
    """B's predictions when its stages after `layer` run on A's representation mapped into B's
    representation shape `shape_b` (from `representation_shape`): `h_a @ w + b` reshaped for a
    flattened map, or the 1x1 convolution of h_a (n, H, W, c_a) resized to B's (H, W) (`conv=True`)."""
    return _evaluate(model_b, variables_b, layer, h_a, w, b, shape_b, None, batch_size, conv)[0]


def stitched_accuracy(model_b: nn.Module, variables_b: Any, layer: str, h_a: np.ndarray, w: jax.Array,
                      b: jax.Array, shape_b: tuple[int, ...], labels: np.ndarray, batch_size: int = 500, *,
                      conv: bool = False) -> float:
    """Accuracy of the stitched network A[:layer] -> (W, b) -> B[layer:] on `labels`."""
    return float(np.mean(stitched_predictions(model_b, variables_b, layer, h_a, w, b, shape_b, batch_size,
                                              conv=conv) == np.asarray(labels)))


def stitched_loss(model_b: nn.Module, variables_b: Any, layer: str, h_a: np.ndarray, w: jax.Array,
                  b: jax.Array, shape_b: tuple[int, ...], labels: np.ndarray, batch_size: int = 500, *,
                  conv: bool = False) -> float:
    """Mean cross-entropy of the stitched network on `labels`: the loss `train_stitch` minimises."""
    return float(np.mean(_evaluate(model_b, variables_b, layer, h_a, w, b, shape_b, labels, batch_size, conv)[1]))


@functools.partial(jax.jit, static_argnums=(0, 2, 3, 4, 5, 6), donate_argnums=(7, 8))
def _stitch_step(model_b: nn.Module, variables_b: Any, layer: str, shape: tuple[int, ...], conv: bool,
                 tx: optax.GradientTransformation, batch_size: int, params: dict, opt_state: Any, h_a: jax.Array,
                 labels: jax.Array, key: jax.Array, step: jax.Array):
    """One Adam step of the map on a minibatch drawn (without replacement) from fold_in(key, step)."""
    idx = jax.random.choice(jax.random.fold_in(key, step), h_a.shape[0], (batch_size,), replace=False)
    h, y = h_a[idx], labels[idx]

    def loss_fn(p):
        logits = _stitched_logits(model_b, variables_b, layer, shape, conv, h, p["w"], p["b"])
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss


@functools.lru_cache(maxsize=None)
def _adam(learning_rate: float) -> optax.GradientTransformation:
    """One (hashable, reused) Adam per learning rate, so repeated calls share one compiled step."""
    return optax.adam(learning_rate)


def train_stitch(model_b: nn.Module, variables_b: Any, layer: str, h_a: np.ndarray, w0: jax.Array, b0: jax.Array,
                 shape_b: tuple[int, ...], labels: np.ndarray, *, key: jax.Array, steps: int = 200,
                 batch_size: int = 128, learning_rate: float = 1e-3, conv: bool = False
                 ) -> tuple[jax.Array, jax.Array]:
    """The stitching map (W, b) trained on the task: cross-entropy of net B's output on the stitched
    representation against the true `labels`, both nets frozen (B in eval mode), from (w0, b0),
    usually the least-squares fit (Bansal et al. 2021). Adam at `learning_rate` for `steps` steps,
    each on `batch_size` examples drawn without replacement from `fold_in(key, step)`.

    Maps and shapes are as in `stitched_predictions` (`conv=True`: a 1x1-conv map of h_a
    (n, H, W, c_a)). The whole of h_a is put on the device. `steps=0` returns (w0, b0) unchanged.
    """
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if not learning_rate > 0:
        raise ValueError(f"learning_rate must be > 0, got {learning_rate}")
    w0, b0 = jnp.asarray(w0, jnp.float32), jnp.asarray(b0, jnp.float32)
    _check_map(h_a, w0, b0, tuple(shape_b), conv)
    labels = np.asarray(labels)
    if labels.shape != (len(h_a),):
        raise ValueError(f"labels must have shape ({len(h_a)},), got {labels.shape}")
    tx = _adam(float(learning_rate))
    params = {"w": w0, "b": b0}
    if steps == 0:
        return params["w"], params["b"]
    params = jax.tree.map(jnp.copy, params)  # the step donates its parameters; keep the caller's arrays
    opt_state = tx.init(params)
    h, y = jnp.asarray(h_a, jnp.float32), jnp.asarray(labels, jnp.int32)
    batch = min(batch_size, len(h_a))
    for step in range(steps):
        params, opt_state, _ = _stitch_step(model_b, variables_b, layer, tuple(shape_b), conv, tx, batch, params,
                                            opt_state, h, y, key, jnp.int32(step))
    return params["w"], params["b"]
