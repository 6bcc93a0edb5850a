"""The airbench94 network (Jordan 2024, KellerJordan/cifar10-airbench, `airbench94.py`) in Flax linen.

    whiten  : 2x2 VALID conv with 2 * C * 4 channels (C input channels; 24 for RGB) + bias, GELU.
              Its kernel is set from training images by patch whitening (`init_whitening`) and kept
              frozen by the training recipe; its bias trains for the first epochs.
    group1-3: conv 3x3 -> 2x2 max pool -> BN -> GELU -> conv 3x3 -> BN -> GELU (64, 256, 256 x width)
    features: global max pool (airbench's MaxPool2d(3) over the 3x3 map a 32x32 input leaves)
    logits  : linear without bias, times 1/9

airbench's tweaks kept here: batch norm without a scale (its weight is frozen at 1), momentum 0.6
(PyTorch's 0.4: running = 0.6 running + 0.4 batch), eps 1e-12; the first `in` filters of every 3x3
conv start as the identity (PyTorch's `dirac_`), the rest with PyTorch's default uniform(+-1/sqrt(fan_in));
GELU is the exact (erf) one, as torch.nn.GELU. Pooling floors as PyTorch's MaxPool2d(2) (32 -> 31 ->
15 -> 7 -> 3); a side of one pixel is kept, so 8x8 inputs run too (7 -> 3 -> 1 -> 1).
Deviation: running variances are biased (Flax), PyTorch keeps the unbiased estimate.

airbench normalises images per channel before whitening; here inputs stay in [0, 1] (the library's
convention) and `init_whitening(..., standardize=True)` folds that normalisation into the kernel and bias,
so the whitening layer's output is the one airbench computes (its patches centred by the bias).
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from anatomy_jax.models.base import Stage, StagedNetwork, channels

AIRBENCH_WIDTHS = (64, 256, 256)


def _torch_default_init():
    """PyTorch's default conv/linear init: uniform(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    return nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def _dirac_init(key, shape, dtype=jnp.float32):
    """PyTorch default init with the first min(in, out) filters replaced by identity filters."""
    kh, kw, cin, cout = shape
    w = _torch_default_init()(key, shape, dtype)
    n = min(cin, cout)
    eye = jnp.zeros((kh, kw, cin, n), dtype).at[kh // 2, kw // 2, jnp.arange(n), jnp.arange(n)].set(1)
    return w.at[..., :n].set(eye)


def max_pool_floor(x, window: int = 2):
    """`window` x `window` max pooling, stride `window`, floor mode (PyTorch's MaxPool2d); a side
    shorter than the window is left unpooled instead of vanishing."""
    n, h, w, c = x.shape
    if h >= window:
        h2 = h // window
        x = x[:, :h2 * window].reshape(n, h2, window, w, c).max(axis=2)
        h = h2
    if w >= window:
        w2 = w // window
        x = x[:, :, :w2 * window].reshape(n, h, w2, window, c).max(axis=3)
    return x


def _gelu(x):
    return nn.gelu(x, approximate=False)


def airbench_batch_norm(train: bool, dtype: Any, axis_name: str | None, momentum: float, eps: float,
                        name: str | None = None) -> nn.BatchNorm:
    """airbench's batch norm: no scale, a trained bias, momentum 0.6 (Flax convention), eps 1e-12."""
    return nn.BatchNorm(use_running_average=not train, momentum=momentum, epsilon=eps, use_scale=False,
                        use_bias=True, dtype=dtype, axis_name=axis_name, use_fast_variance=False, name=name)


class WhiteningConv(nn.Module):
    """k x k VALID conv to 2 * C * k * k channels with bias, then GELU. Parameters `kernel` (HWIO)
    and `bias` live directly under the stage's name (set them with `init_whitening`)."""

    patch_size: int = 2
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        k = self.patch_size
        cin = x.shape[-1]
        kernel = self.param("kernel", _torch_default_init(), (k, k, cin, 2 * cin * k * k))
        bias = self.param("bias", nn.initializers.zeros, (2 * cin * k * k,))
        y = jax.lax.conv_general_dilated(x.astype(self.dtype), kernel.astype(self.dtype), (1, 1), "VALID",
                                         dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return _gelu(y + bias.astype(self.dtype))


class ConvGroup(nn.Module):
    """airbench's ConvGroup: conv -> pool -> BN -> GELU -> conv -> BN -> GELU."""

    features: int
    bn_momentum: float = 0.6
    bn_eps: float = 1e-12
    dtype: Any = jnp.float32
    norm_axis: str | None = None

    @nn.compact
    def __call__(self, x, train: bool = False):
        conv = lambda: nn.Conv(self.features, (3, 3), padding="SAME", use_bias=False, kernel_init=_dirac_init,
                               dtype=self.dtype)
        norm = lambda: airbench_batch_norm(train, self.dtype, self.norm_axis, self.bn_momentum, self.bn_eps)
        x = max_pool_floor(conv()(x))
        x = _gelu(norm()(x))
        return _gelu(norm()(conv()(x)))


class GlobalMaxPool(nn.Module):
    """(N, H, W, C) -> (N, C) by the maximum over space."""

    @nn.compact
    def __call__(self, x, train: bool = False):
        return jnp.max(x, axis=(1, 2))


class ScaledLogits(nn.Module):
    """Linear map without bias to class scores, times `scale` (airbench: 1/9), in float32."""

    num_classes: int
    scale: float = 1.0 / 9.0

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = x.reshape((x.shape[0], -1)).astype(jnp.float32)
        return self.scale * nn.Dense(self.num_classes, use_bias=False, kernel_init=_torch_default_init())(x)


class Airbench94(StagedNetwork):
    """airbench94's network. Stages: whiten, group1, group2, group3, features, logits."""

    widths: Sequence[int] = AIRBENCH_WIDTHS
    patch_size: int = 2
    bn_momentum: float = 0.6
    bn_eps: float = 1e-12
    logit_scale: float = 1.0 / 9.0

    def stages(self) -> Sequence[Stage]:
        out: list[Stage] = [("whiten", lambda name: WhiteningConv(self.patch_size, dtype=self.dtype, name=name))]
        out += [(f"group{i + 1}", lambda name, w=w: ConvGroup(channels(w, self.width), self.bn_momentum, self.bn_eps,
                                                              dtype=self.dtype, norm_axis=self.norm_axis, name=name))
                for i, w in enumerate(self.widths)]
        out.append(("features", lambda name: GlobalMaxPool(name=name)))
        return out + [("logits", lambda name: ScaledLogits(self.num_classes, self.logit_scale, name=name))]

    def layer_groups(self, names: Sequence[str]) -> list[str]:
        """RWC groups: the whitening layer is the `stem`, group i is `block{i}`, the linear layer the
        `classifier` (as the residual networks)."""
        def group(name: str) -> str:
            top = name.split("/", 1)[0]
            if top not in self.layer_names:
                raise ValueError(f"{name!r} is not a weight of this model")
            return {"whiten": "stem", "features": "classifier", "logits": "classifier"}.get(
                top, top.replace("group", "block"))
        return [group(n) for n in names]


# ---- patch whitening ---------------------------------------------------------------------------


def image_patches(images, patch_size: int = 2):
    """Every k x k patch (stride 1, VALID) of (N, H, W, C) images as rows of a (M, k*k*C) matrix,
    flattened in the kernel's HWIO order (row, column, channel)."""
    images = jnp.asarray(images, jnp.float32)
    n, h, w, c = images.shape
    k = patch_size
    if not 1 <= k <= min(h, w):
        raise ValueError(f"patch_size must be in [1, {min(h, w)}], got {patch_size}")
    rows = [images[:, i:h - k + 1 + i, j:w - k + 1 + j, :] for i in range(k) for j in range(k)]
    return jnp.stack(rows, axis=3).reshape(-1, k * k * c)


def whitening_kernel(images, patch_size: int = 2, eps: float = 5e-4):
    """The whitening conv kernel of airbench's `init_whitening_conv`, from the patch covariance.

    With C = U diag(lambda) U^T the covariance of the (centred) k x k patches, eigenvalues in
    descending order, the kernel's first k*k*C output channels are u_i / sqrt(lambda_i + eps) and the
    next k*k*C their negatives (so a following GELU sees both signs). Applied to centred patches, the
    first half's outputs have covariance diag(lambda / (lambda + eps)): the identity up to eps.
    airbench uses the uncentred second moment of per-channel normalised images (mean ~0, so ~equal).
    Returns a (k, k, C, 2 k*k*C) HWIO kernel.
    """
    if not eps >= 0:
        raise ValueError(f"eps must be >= 0, got {eps}")
    images = jnp.asarray(images, jnp.float32)
    c = images.shape[-1]
    p = image_patches(images, patch_size)
    p = p - p.mean(axis=0)
    cov = p.T @ p / p.shape[0]
    evals, evecs = jnp.linalg.eigh(cov)
    evals, evecs = evals[::-1], evecs[:, ::-1]  # descending, as airbench
    w = evecs / jnp.sqrt(jnp.maximum(evals, 0.0) + eps)
    w = jnp.concatenate([w, -w], axis=1)
    return w.reshape(patch_size, patch_size, c, w.shape[1])


def whitening_bias(images, kernel):
    """The bias that centres the whitening conv's outputs on `images`: -mean patch @ kernel."""
    k = kernel.shape[0]
    mean = image_patches(images, k).mean(axis=0)
    return -mean @ kernel.reshape(-1, kernel.shape[-1])


def init_whitening(params, images, eps: float = 5e-4, standardize: bool = True):
    """`params` with the `whiten` stage's kernel and bias computed from `images` (pure; returns a new
    pytree). `standardize`: whiten per-channel standardised images, as airbench does (its eps is
    relative to unit channel variance), with the standardisation folded into the kernel and bias so
    the model still takes the raw [0, 1] images."""
    kernel_shape = params["whiten"]["kernel"].shape
    images = jnp.asarray(images, jnp.float32)
    std = images.std(axis=(0, 1, 2)) if standardize else jnp.ones(images.shape[-1])
    kernel = whitening_kernel(images / std, kernel_shape[0], eps) / std[None, None, :, None]
    if kernel.shape != kernel_shape:
        raise ValueError(f"images with {images.shape[-1]} channels give a {kernel.shape} kernel; "
                         f"the model's is {kernel_shape}")
    bias = whitening_bias(images, kernel)
    whiten = {**params["whiten"], "kernel": kernel.astype(params["whiten"]["kernel"].dtype),
              "bias": bias.astype(params["whiten"]["bias"].dtype)}
    return {**params, "whiten": whiten}


def param_labels(params):
    """airbench's parameter groups, as a pytree of labels for `optax.multi_transform`:
    `whiten_kernel` (frozen), `whiten_bias` (trained for the first epochs), `norm_bias` (batch-norm
    biases: learning rate x bias_scaler) and `other`."""

    def label(path, _):
        keys = [getattr(p, "key", str(p)) for p in path]
        if keys[0] == "whiten":
            return "whiten_" + keys[-1]
        return "norm_bias" if any(str(k).startswith("BatchNorm") for k in keys) else "other"

    return jax.tree_util.tree_map_with_path(label, params)

