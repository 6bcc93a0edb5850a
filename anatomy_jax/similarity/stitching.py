"""Model stitching: net A's representation at a layer, mapped linearly into net B's representation
at the matching layer, then the rest of net B (Lenc & Vedaldi 2015; Bansal et al. 2021)."""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np


@functools.partial(jax.jit, static_argnums=(0, 2, 3))
def _rest_of_b(model_b: nn.Module, variables_b: Any, layer: str, shape: tuple[int, ...], h: jax.Array, w, b):
    mapped = (h @ w + b).reshape((h.shape[0], *shape))
    return model_b.apply(variables_b, mapped, start_after=layer).argmax(-1)


def stitched_predictions(model_b: nn.Module, variables_b: Any, layer: str, h_a: np.ndarray, w: jax.Array,
                         b: jax.Array, shape_b: tuple[int, ...], batch_size: int = 500) -> np.ndarray:
    """B's predictions when its stages after `layer` run on `h_a @ w + b` reshaped to B's
    representation shape `shape_b` (from `representation_shape`)."""
    if h_a.shape[1] != w.shape[0] or int(np.prod(shape_b)) != w.shape[1]:
        raise ValueError(f"map {tuple(w.shape)} does not take {h_a.shape[1]} features to {shape_b}")
    return np.concatenate([np.asarray(_rest_of_b(model_b, variables_b, layer, tuple(shape_b),
                                                 jnp.asarray(h_a[i:i + batch_size]), w, b))
                           for i in range(0, len(h_a), batch_size)])


def stitched_accuracy(model_b: nn.Module, variables_b: Any, layer: str, h_a: np.ndarray, w: jax.Array,
                      b: jax.Array, shape_b: tuple[int, ...], labels: np.ndarray, batch_size: int = 500) -> float:
    """Accuracy of the stitched network A[:layer] -> (W, b) -> B[layer:] on `labels`."""
    return float(np.mean(stitched_predictions(model_b, variables_b, layer, h_a, w, b, shape_b, batch_size)
                         == np.asarray(labels)))
