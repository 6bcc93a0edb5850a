"""Similarity overlays (Fong's interactive overlays): where the features of one location reappear.

The activation vector of a layer at a query location is compared by cosine similarity with the
vector at every location of the same image, another image, or another model's layer of the same
width (channels are compared as they are: two independently trained nets need a channel map
first, e.g. `similarity.fit_conv_map`). The map is upsampled (bilinear) to the image when asked.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np

from anatomy_jax.concepts.net2vec import upsample


def pixel_to_cell(yx: tuple[int, int], image_size: tuple[int, int], grid: tuple[int, int]) -> tuple[int, int]:
    """The cell of an (h, w) activation grid whose image region holds pixel (row, col)."""
    (y, x), (hh, ww), (gh, gw) = yx, image_size, grid
    if not (0 <= y < hh and 0 <= x < ww):
        raise ValueError(f"pixel {tuple(yx)} is outside the {hh}x{ww} image")
    return int(y * gh // hh), int(x * gw // ww)


def similarity_overlay(acts_query: jax.Array, query_yx: tuple[int, int], acts_other: jax.Array, *,
                       image_size: tuple[int, int] | None = None, eps: float = 1e-8) -> jax.Array:
    """(H, W) cosine similarity of acts_query[query_yx] (a (h, w, c) map) with every location of
    acts_other (h', w', c).

    Without `image_size`, `query_yx` is a cell of acts_query and the map has acts_other's grid
    (H, W) = (h', w'). With `image_size` = (H, W), `query_yx` is an image pixel (mapped to the cell
    covering it) and the map is upsampled bilinearly to the image. Values lie in [-1, 1]; a
    location with a zero vector scores 0."""
    chex.assert_rank(acts_query, 3)
    chex.assert_rank(acts_other, 3)
    if acts_query.shape[-1] != acts_other.shape[-1]:
        raise ValueError(f"channel counts differ: {acts_query.shape[-1]} vs {acts_other.shape[-1]} (map one "
                         "model's channels onto the other's first)")
    grid = tuple(acts_query.shape[:2])
    y, x = pixel_to_cell(query_yx, image_size, grid) if image_size is not None else tuple(int(v) for v in query_yx)
    if not (0 <= y < grid[0] and 0 <= x < grid[1]):
        raise ValueError(f"query cell {(y, x)} is outside the {grid[0]}x{grid[1]} activation grid")
    q = jnp.asarray(acts_query, jnp.float32)[y, x]
    other = jnp.asarray(acts_other, jnp.float32)
    dots = other @ q
    sim = dots / jnp.maximum(jnp.linalg.norm(other, axis=-1) * jnp.linalg.norm(q), eps)
    if image_size is not None:
        sim = upsample(sim[None, ..., None], tuple(image_size))[0, ..., 0]
    return sim


def peak_location(overlay: jax.Array) -> tuple[int, int]:
    """(row, col) of an overlay's maximum (the first, in row-major order, on ties)."""
    chex.assert_rank(overlay, 2)
    flat = int(np.argmax(np.asarray(overlay)))
    return divmod(flat, overlay.shape[1])
