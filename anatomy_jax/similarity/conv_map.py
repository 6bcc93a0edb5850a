"""1x1-convolution channel maps between convolutional representations (Lenc & Vedaldi 2015).

One c_a x c_b map (and a c_b bias) shared by every spatial position takes net A's map
(n, H, W, c_a) to net B's (n, H, W, c_b). It is fitted by least squares over all n H W positions
from the normal equations, accumulated chunk by chunk, so memory is O(c_a^2 + c_a c_b) beyond one
chunk of examples, whatever n and H W are.

Spatial sizes may differ between nets at the same relative depth. A is then resized to B's (H, W)
first, axis by axis (`resize_spatial`): average pooling when A is larger by an integer factor,
nearest-neighbour upsampling (repetition) when it is smaller by an integer factor; other ratios
are refused.
"""

from __future__ import annotations

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np


def resize_factors(src: tuple[int, int], dst: tuple[int, int]) -> tuple[tuple[int, int], tuple[int, int]]:
    """((pool_h, pool_w), (repeat_h, repeat_w)) taking spatial size `src` to `dst`, axis by axis:
    pool by k where src = k dst, repeat by k where dst = k src (1 where equal).

    Raises ValueError for a ratio that is not an integer either way (e.g. 7 -> 4): no pooling or
    repetition maps those positions onto each other without inventing an alignment."""
    pool, repeat = [], []
    for axis, s, d in zip(("height", "width"), src, dst):
        if s < 1 or d < 1:
            raise ValueError(f"spatial sizes must be positive, got {tuple(src)} -> {tuple(dst)}")
        if s % d == 0:
            pool.append(s // d)
            repeat.append(1)
        elif d % s == 0:
            pool.append(1)
            repeat.append(d // s)
        else:
            raise ValueError(f"cannot resize {axis} {s} to {d}: the ratio {s}/{d} is not an integer either way "
                             f"(spatial sizes {tuple(src)} -> {tuple(dst)}); average pooling and nearest-neighbour "
                             "upsampling need integer factors")
    return (pool[0], pool[1]), (repeat[0], repeat[1])


def resize_spatial(h: jax.Array, size: tuple[int, int]) -> jax.Array:
    """(n, H, W, c) -> (n, size[0], size[1], c): per axis, the mean over k x k blocks where H = k size
    (average pooling) or each position repeated k times where size = k H (nearest neighbour).

    The identity when the sizes already agree; ValueError for non-integer ratios (`resize_factors`)."""
    chex.assert_rank(h, 4)
    n, hh, ww, c = h.shape
    (ph, pw), (rh, rw) = resize_factors((hh, ww), tuple(size))
    if ph > 1 or pw > 1:
        h = h.reshape(n, hh // ph, ph, ww // pw, pw, c).mean(axis=(2, 4))
    if rh > 1:
        h = jnp.repeat(h, rh, axis=1)
    if rw > 1:
        h = jnp.repeat(h, rw, axis=2)
    return h


def apply_conv_map(h: jax.Array, w: jax.Array, b: jax.Array, size: tuple[int, int] | None = None) -> jax.Array:
    """The 1x1 convolution of (n, H, W, c_a) maps by w (c_a, c_b) and bias b (c_b,), after resizing
    to spatial `size` (default: keep H, W): (n, size..., c_b)."""
    chex.assert_rank([h, w, b], [4, 2, 1])
    if h.shape[-1] != w.shape[0] or w.shape[1] != b.shape[0]:
        raise ValueError(f"map {tuple(w.shape)} with bias {tuple(b.shape)} does not take {h.shape[-1]} channels")
    if size is not None:
        h = resize_spatial(h, size)
    return jnp.einsum("nhwc,cd->nhwd", h, w) + b


@functools.partial(jax.jit, static_argnums=(3,))
def _chunk_moments(xa, yb, mask, size):
    """(count, mean_x, mean_y, centred X^T X, centred X^T Y) of one chunk's real positions (float32,
    centred on the chunk's own means, so the sums do not cancel)."""
    x = resize_spatial(xa.astype(jnp.float32), size)
    y = yb.astype(jnp.float32)
    x = x.reshape(x.shape[0], -1, x.shape[-1])
    y = y.reshape(y.shape[0], -1, y.shape[-1])
    m = mask.astype(jnp.float32)[:, None, None]
    count = m.sum() * x.shape[1]
    mx = (x * m).sum(axis=(0, 1)) / count
    my = (y * m).sum(axis=(0, 1)) / count
    xc = ((x - mx) * m).reshape(-1, x.shape[-1])
    yc = ((y - my) * m).reshape(-1, y.shape[-1])
    return count, mx, my, xc.T @ xc, xc.T @ yc


class _Moments:
    """Running count, means and centred cross-products in float64, merged chunk by chunk (Chan et
    al. 1979: exact pairwise combination of centred sums)."""

    def __init__(self, p: int, q: int):
        self.n = 0.0
        self.mx, self.my = np.zeros(p), np.zeros(q)
        self.xx, self.xy = np.zeros((p, p)), np.zeros((p, q))

    def add(self, n, mx, my, xx, xy) -> None:
        n, mx, my = float(n), np.asarray(mx, np.float64), np.asarray(my, np.float64)
        total = self.n + n
        dx, dy = mx - self.mx, my - self.my
        scale = self.n * n / total
        self.xx += np.asarray(xx, np.float64) + scale * np.outer(dx, dx)
        self.xy += np.asarray(xy, np.float64) + scale * np.outer(dx, dy)
        self.mx += dx * (n / total)
        self.my += dy * (n / total)
        self.n = total


def _solve(moments: _Moments, ridge: float) -> tuple[np.ndarray, np.ndarray]:
    """(W, b) from the normal equations (X_c^T X_c + ridge I) W = X_c^T Y_c, b = mean_y - mean_x W;
    with ridge = 0 the minimum-norm solution (eigen-directions below float32 noise are dropped)."""
    e, v = np.linalg.eigh(moments.xx)
    tol = max(e.max(initial=0.0), 0.0) * moments.xx.shape[0] * np.finfo(np.float32).eps
    inv = np.where(e > tol, 1.0 / np.maximum(e + ridge, np.finfo(np.float64).tiny), 0.0)
    w = v @ (inv[:, None] * (v.T @ moments.xy))
    return w, moments.my - moments.mx @ w


def fit_conv_map(h_a: np.ndarray | jax.Array, h_b: np.ndarray | jax.Array, ridge: float = 0.0,
                 batch_size: int = 256) -> tuple[jax.Array, jax.Array]:
    """(W (c_a, c_b), b (c_b,)) minimising sum over examples and positions of
    ||resize(h_a)[i, y, x] W + b - h_b[i, y, x]||^2 + ridge ||W||_F^2: one 1x1 convolution from A's
    map (n, H_a, W_a, c_a) to B's (n, H_b, W_b, c_b), with A resized to (H_b, W_b) (`resize_spatial`).

    The intercept is not penalised; ridge = 0 gives minimum-norm least squares (as
    `fit_linear_map` on the position rows). Centred normal equations are accumulated over chunks of
    `batch_size` examples (float32 within a chunk, merged in float64), so memory is
    O(c_a^2 + c_a c_b) plus one chunk: no (n H W) x c copy is made.
    """
    chex.assert_rank([h_a, h_b], 4)
    if ridge < 0:
        raise ValueError(f"ridge must be >= 0, got {ridge}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    n = h_a.shape[0]
    if n < 1 or h_b.shape[0] != n:
        raise ValueError(f"h_a and h_b need the same positive number of examples, got {h_a.shape[0]} and "
                         f"{h_b.shape[0]}")
    size = tuple(h_b.shape[1:3])
    resize_factors(tuple(h_a.shape[1:3]), size)  # refuse bad ratios before any work
    batch_size = min(batch_size, n)
    moments = _Moments(h_a.shape[-1], h_b.shape[-1])
    for i in range(0, n, batch_size):
        xa, yb = np.asarray(h_a[i:i + batch_size]), np.asarray(h_b[i:i + batch_size])
        real = len(xa)
        mask = np.arange(batch_size) < real
        if real < batch_size:  # pad the last chunk: one compiled shape; padding is masked out
            xa = np.concatenate([xa, np.zeros((batch_size - real, *xa.shape[1:]), xa.dtype)])
            yb = np.concatenate([yb, np.zeros((batch_size - real, *yb.shape[1:]), yb.dtype)])
        moments.add(*jax.device_get(_chunk_moments(jnp.asarray(xa), jnp.asarray(yb), jnp.asarray(mask), size)))
    w, b = _solve(moments, float(ridge))
    return jnp.asarray(w, jnp.float32), jnp.asarray(b, jnp.float32)
