"""Building blocks of perturbation attribution: Gaussian blur, the perturbation pyramid, smooth
masks (smooth max-convolution of a coarse parameter grid), the ranking area regulariser and the
total variation of a mask.

Images are (H, W, C) floats (a leading batch axis is allowed where noted); masks are (H, W) in
[0, 1], 1 = the pixel is kept. Everything here follows TorchRay (`torchray/utils.py::imsmooth`,
`torchray/attribution/extremal_perturbation.py`) and is pure and jittable; the geometry (blur
matrices, mask gather indices) is built once in numpy from static sizes.

TorchRay's defaults are for 224 px inputs (mask step 7, sigma 21, max blur 20). `scaled_defaults`
scales them by H / 224 for small inputs (8x8 to 32x32), keeping step >= 1 px and blurs of at least
a mask sigma and a maximum blur of at least 1 px (`MIN_SIGMA`, `MIN_BLUR`: a blur narrower than a
pixel perturbs nothing, and a mask kernel narrower than a pixel cannot be smooth).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np

REFERENCE_SIZE = 224  # TorchRay's input size, where its defaults hold
MIN_BLUR = 1.0  # px: the smallest maximum blur scaled_defaults gives (zero-padded, it still wipes small patches)
MIN_SIGMA = 1.0  # px: the smallest mask sigma scaled_defaults gives
PERTURBATIONS = ("blur", "fade")
TIE_TOLERANCE = 2.0 ** -16  # mask values in one bucket of this width rank by `priority` in area_rank_loss


def scaled_defaults(size: int) -> dict[str, float | int]:
    """TorchRay's extremal-perturbation geometry for a `size` px image: `step` = max(1, round(7 s)),
    `sigma` = max(21 s, MIN_SIGMA), `max_blur` = max(20 s, MIN_BLUR) with s = size / 224 (at 224 px:
    7, 21, 20; at 32 px: 1, 3, 2.86; at 28 px: 1, 2.625, 2.5; at 8 px: 1, 1, 1)."""
    if size < 1:
        raise ValueError(f"image size must be >= 1, got {size}")
    s = size / REFERENCE_SIZE
    return {"step": max(1, round(7 * s)), "sigma": max(21 * s, MIN_SIGMA), "max_blur": max(20 * s, MIN_BLUR)}


def gaussian_kernel(sigma: float) -> np.ndarray:
    """TorchRay's 1-d Gaussian: taps -W..W with W = ceil(4 sigma), exp(-i^2 / (2 sigma^2)), summed to 1
    (sigma 0: the identity [1])."""
    if sigma < 0:
        raise ValueError(f"sigma must be >= 0, got {sigma}")
    width = math.ceil(4 * sigma)
    taps = np.arange(-width, width + 1, dtype=np.float64) / (math.sqrt(2) * sigma + 1e-12)
    k = np.exp(-taps * taps)
    return (k / k.sum()).astype(np.float32)


def blur_matrix(n: int, sigma: float) -> np.ndarray:
    """(n, n) matrix B with (B x)_i = sum_j k_{j - i} x_j: 1-d Gaussian smoothing with zero padding."""
    k = gaussian_kernel(sigma)
    width = len(k) // 2
    i, j = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    offset = j - i
    return np.where(np.abs(offset) <= width, k[np.clip(offset + width, 0, len(k) - 1)], 0.0).astype(np.float32)


def gaussian_blur(x: jax.Array, sigma: float) -> jax.Array:
    """Separable Gaussian blur of (..., H, W, C) images with zero padding (TorchRay's `imsmooth`)."""
    if x.ndim < 3:
        raise ValueError(f"images must be (..., H, W, C), got shape {x.shape}")
    h, w = x.shape[-3], x.shape[-2]
    bh, bw = jnp.asarray(blur_matrix(h, sigma)), jnp.asarray(blur_matrix(w, sigma))
    return jnp.einsum("ij,...jwc,vw->...ivc", bh, x, bw)


def shift_edge(x: jax.Array, shift: jax.Array, max_shift: int) -> jax.Array:
    """(H, W, C) image moved by `shift` = (rows, cols) px (traced ints in [-max_shift, max_shift];
    positive moves the content down / right) without wrapping around: the pixels uncovered at one
    edge repeat that edge (out[i, j] = x[clip(i - dy), clip(j - dx)]). A wrapped shift (jnp.roll)
    would carry a bottom-right trigger to the top-left corner."""
    chex.assert_rank(x, 3)
    chex.assert_shape(shift, (2,))
    if max_shift < 0:
        raise ValueError(f"max_shift must be >= 0, got {max_shift}")
    if max_shift == 0:
        return x
    s = int(max_shift)
    padded = jnp.pad(x, ((s, s), (s, s), (0, 0)), mode="edge")
    shift = jnp.clip(shift, -s, s)
    return jax.lax.dynamic_slice(padded, (s - shift[0], s - shift[1], 0), x.shape)


def pyramid_sigmas(num_levels: int, max_blur: float) -> np.ndarray:
    """Blur of each pyramid level, sigma_l = max_blur (1 - l / (L - 1)): level 0 the most blurred,
    level L-1 the image itself."""
    if num_levels < 2 or max_blur <= 0:
        raise ValueError(f"a pyramid needs num_levels >= 2 and max_blur > 0, got {num_levels}, {max_blur}")
    return (1.0 - np.linspace(0.0, 1.0, num_levels)) * max_blur


def blur_pyramid(x: jax.Array, num_levels: int = 8, max_blur: float = 20.0, kind: str = "blur") -> jax.Array:
    """(L, H, W, C) increasingly perturbed copies of the (H, W, C) image `x`: level l is blurred with
    sigma_l (`blur`) or multiplied by l / (L - 1) (`fade`, to black). Level L-1 is `x`."""
    chex.assert_rank(x, 3)
    if kind not in PERTURBATIONS:
        raise ValueError(f"unknown perturbation {kind!r}; choose one of {', '.join(PERTURBATIONS)}")
    if kind == "fade":
        if num_levels < 2:
            raise ValueError(f"a pyramid needs num_levels >= 2, got {num_levels}")
        return jnp.linspace(0.0, 1.0, num_levels)[:, None, None, None] * x[None]
    h, w, _ = x.shape
    sigmas = pyramid_sigmas(num_levels, max_blur)
    bh = jnp.asarray(np.stack([blur_matrix(h, s) for s in sigmas]))
    bw = jnp.asarray(np.stack([blur_matrix(w, s) for s in sigmas]))
    return jnp.einsum("lij,jwc,lvw->livc", bh, x, bw)


def apply_pyramid(pyramid: jax.Array, mask: jax.Array) -> jax.Array:
    """(H, W, C) image whose pixel u is the pyramid read at level m(u) (L-1): linear interpolation
    between the two nearest levels, so m = 1 keeps the pixel and m = 0 takes the most perturbed one."""
    chex.assert_rank([pyramid, mask], [4, 2])
    num_levels = pyramid.shape[0]
    w = jnp.clip(mask, 0.0, 1.0) * (num_levels - 1)
    k = jnp.floor(w)
    frac = (w - k)[..., None]
    k = k.astype(jnp.int32)
    k1 = jnp.minimum(k + 1, num_levels - 1)

    def take(level):
        index = jnp.broadcast_to(level[None, :, :, None], (1, *pyramid.shape[1:]))
        return jnp.take_along_axis(pyramid, index, axis=0)[0]

    return (1.0 - frac) * take(k) + frac * take(k1)


class SmoothMaskGenerator(NamedTuple):
    """TorchRay's `MaskGenerator` for the image crop: mask(u) = smax_k w_k(u) p[i_k(u)] over the
    (2r + 1)^2 grid points near u, w = exp(-2 max(d / sigma - 1/2, 0)^2) with d the distance from u
    to grid point i (grid points `step` px apart), smax the softmax-weighted mean with `coldness`."""

    param_shape: tuple[int, int]  # (ceil(H / step), ceil(W / step))
    padding: int
    index: np.ndarray  # (H, W, K) flat indices into the zero-padded parameter grid
    weight: np.ndarray  # (H, W, K) kernel values
    coldness: float

    def __call__(self, params: jax.Array) -> jax.Array:
        """(H, W) mask in [0, 1] from (gh, gw) parameters."""
        chex.assert_shape(params, self.param_shape)
        padded = jnp.pad(params, self.padding).reshape(-1)
        v = jnp.asarray(self.weight) * padded[jnp.asarray(self.index)]
        if math.isinf(self.coldness):
            m = v.max(axis=-1)
        else:
            m = (v * jax.nn.softmax(self.coldness * v, axis=-1)).sum(axis=-1)
        return jnp.clip(m, 0.0, 1.0)


def smooth_mask_generator(shape: tuple[int, int], step: int, sigma: float,
                          coldness: float = 20.0) -> SmoothMaskGenerator:
    """The smooth-mask generator for (H, W) masks (TorchRay's geometry: a margin of round(sigma) px,
    padding 1 + ceil((margin + sigma) / step) grid points, radius 1 + ceil(sigma / step)). TorchRay's
    margin is sigma itself and its crop round(sigma), which puts the grid off the pixel centres by
    sigma - round(sigma): nothing at 224 px (sigma 21), but at 8 px (sigma 0.75) a quarter pixel
    that keeps every mask from being binary; the two agree for whole-pixel sigma."""
    if int(step) != step or step < 1:
        raise ValueError(f"step must be a positive integer, got {step}")
    if not sigma > 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    h, w = shape
    step = int(step)
    margin = round(sigma)  # TorchRay: sigma, cropped at round(sigma); whole pixels keep grid points on pixel centres
    padding = 1 + math.ceil((margin + sigma) / step)
    radius = 1 + math.ceil(sigma / step)
    gh, gw = math.ceil(h / step), math.ceil(w / step)
    crop = margin
    offsets = np.arange(2 * radius + 1)

    def axis(n: int):
        u = np.arange(n) + crop  # coordinate in the margin-padded frame
        i = u[:, None] // step + offsets[None, :] - padding  # grid index (unpadded)
        d = u[:, None] - (margin + step * i)
        return i + padding, d  # index into the padded grid, signed distance

    iy, dy = axis(h)
    ix, dx = axis(w)
    width = gw + 2 * padding
    index = (iy[:, None, :, None] * width + ix[None, :, None, :]).reshape(h, w, -1)
    dist = np.sqrt(dy[:, None, :, None] ** 2 + dx[None, :, None, :] ** 2).reshape(h, w, -1)
    weight = np.exp(-2.0 * np.maximum(dist / sigma - 0.5, 0.0) ** 2).astype(np.float32)
    return SmoothMaskGenerator((gh, gw), padding, index.astype(np.int32), weight, float(coldness))


def area_reference(num_pixels: int, area: jax.Array) -> jax.Array:
    """The sorted target of the ranking regulariser: (1 - a) N zeros then ones (TorchRay: the first
    int(N (1 - a)) entries are 0)."""
    zeros = jnp.floor(num_pixels * (1.0 - area))
    return (jnp.arange(num_pixels) >= zeros).astype(jnp.float32)


def area_rank_loss(mask: jax.Array, area: jax.Array, priority: jax.Array | None = None) -> jax.Array:
    """mean((sort(mask) - r_a)^2): 0 exactly when a share `area` of the pixels is 1 and the rest 0.
    Ties (values that round to the same multiple of TIE_TOLERANCE: fixed buckets, so two values a
    hair apart may still fall either side of a bucket edge) are ranked by `priority` ((H W,) distinct
    numbers, e.g. a random permutation), else (exact ties) by pixel index (a stable sort). Ties are common (parameters clamp at 0 and 1), and where the reward is weak
    the regulariser alone picks the tied pixels that become 1: by index, always the last rows (the
    bottom-right corner); by a random priority, random pixels."""
    flat = mask.reshape(-1)
    if priority is None:
        order = jnp.argsort(flat, stable=True)
    else:  # values in one TIE_TOLERANCE bucket count as tied: float rounding (batched or not) must not reorder them
        chex.assert_shape(priority, (flat.size,))
        order = jnp.lexsort((priority, jnp.round(flat / TIE_TOLERANCE)))
    ranked = flat[order]
    return jnp.mean((ranked - area_reference(flat.size, area)) ** 2)


def tv_norm(mask: jax.Array, beta: float = 3.0) -> jax.Array:
    """Total variation of an (H, W) mask as in the meaningful-perturbation code: mean |vertical
    differences|^beta + mean |horizontal differences|^beta."""
    chex.assert_rank(mask, 2)
    return (jnp.mean(jnp.abs(jnp.diff(mask, axis=0)) ** beta) + jnp.mean(jnp.abs(jnp.diff(mask, axis=1)) ** beta))
