"""Named intermediate representations of a registry model over a whole dataset, batched and jitted."""

from __future__ import annotations

import functools
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

POOLING = ("flatten", "mean")


@functools.partial(jax.jit, static_argnums=(0, 3, 4))
def _capture(model: nn.Module, variables: Any, x_uint8: jax.Array, layers: tuple[str, ...], pooling: str):
    _, reps = model.apply(variables, x_uint8.astype(jnp.float32) / 255.0, capture=True)
    out = {}
    for name in layers:
        h = reps[name]
        if h.ndim == 4 and pooling == "mean":
            h = h.mean(axis=(1, 2))
        out[name] = h.reshape(h.shape[0], -1)
    return out


def representations(model: nn.Module, variables: Any, images: np.ndarray, layers: Sequence[str] | None = None,
                    pooling: str = "flatten", batch_size: int = 500) -> dict[str, np.ndarray]:
    """{layer: (n, d) float32} for uint8 images (n, H, W, C) and the layers in `model.layer_names`
    (default: all). Conv maps are flattened (`pooling="flatten"`, what stitching and linear maps
    need: the map is reshaped back to the layer's shape) or averaged over space (`"mean"`, a
    d = channels summary that CCA-type indices can afford)."""
    names = tuple(layers) if layers is not None else tuple(model.layer_names)
    unknown = [n for n in names if n not in model.layer_names]
    if unknown:
        raise ValueError(f"unknown layer(s) {unknown}; this model has {', '.join(model.layer_names)}")
    if pooling not in POOLING:
        raise ValueError(f"unknown pooling {pooling!r}; choose one of {', '.join(POOLING)}")
    batch_size = min(batch_size, len(images))
    chunks = []
    for i in range(0, len(images), batch_size):
        batch = np.asarray(images[i:i + batch_size])
        real = len(batch)
        if real < batch_size:  # pad the last batch: one compiled shape for the whole dataset
            batch = np.concatenate([batch, np.zeros((batch_size - real, *batch.shape[1:]), batch.dtype)])
        reps = jax.device_get(_capture(model, variables, jnp.asarray(batch), names, pooling))
        chunks.append({name: r[:real] for name, r in reps.items()})
    return {name: np.concatenate([c[name] for c in chunks]).astype(np.float32) for name in names}


def representation_shape(model: nn.Module, variables: Any, image_shape: tuple[int, int, int], layer: str
                         ) -> tuple[int, ...]:
    """The shape of one example's representation at `layer` (to unflatten a mapped representation)."""
    _, reps = jax.eval_shape(lambda v, x: model.apply(v, x, capture=True), variables,
                             jax.ShapeDtypeStruct((1, *image_shape), jnp.float32))
    return tuple(reps[layer].shape[1:])
