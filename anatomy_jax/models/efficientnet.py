"""EfficientNet (Tan & Le 2019) for small images: B0 scaled for 32x32 inputs, B4 as a configuration.

MBConv blocks: 1x1 pointwise expansion (absent where the expansion ratio is 1), depthwise k x k
conv, squeeze-and-excitation (reduce to 1/4 of the block's input channels, swish, expand, sigmoid
gate), 1x1 pointwise linear projection; batch norm after every conv but the SE ones, swish
activations, identity shortcut where the shape is kept. The B0 stage table is the paper's
(expansion, kernel, stride, channels, repeats); B4 scales channels by 1.4 (rounded to multiples
of 8) and repeats by 1.8 (rounded up). For 32x32 inputs the stem has stride 1 and the stage
strides are 1, 2, 2, 2, 1, 2, 1 (a 2x2 map before pooling), as in the common CIFAR adaptation.
No dropout or drop-connect: the trainers apply models without a dropout key (documented choice).

Stages: stem, stage1..stage7, head (1x1 conv to 1280 x width coefficient), features (global
average pool), logits. Each weight tensor has a type (`layer_types`): `stem`, `pointwise`
(expansion), `depthwise`, `squeeze_excite` (reduce and expand), `pointwise_linear` (projection),
`head`, `classifier`, the grouping the WeightScale paper clusters separately for EfficientNet-B4.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from anatomy_jax.models.base import GlobalPool, Logits, Stage, StagedNetwork, batch_norm, channels

# (expansion ratio, kernel, stride (ImageNet), output channels, repeats) of EfficientNet-B0.
B0_STAGES = ((1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3), (6, 5, 2, 112, 3),
             (6, 5, 2, 192, 4), (6, 3, 1, 320, 1))
SMALL_IMAGE_STRIDES = (1, 2, 2, 2, 1, 2, 1)  # with a stride-1 stem: 32 -> 2 px before pooling
IMAGENET_STRIDES = tuple(s[2] for s in B0_STAGES)
# The module names inside an MBConv block and the type of their kernels.
LAYER_TYPES = {"expand": "pointwise", "depthwise": "depthwise", "se_reduce": "squeeze_excite",
               "se_expand": "squeeze_excite", "project": "pointwise_linear"}
TYPES = ("stem", "pointwise", "depthwise", "squeeze_excite", "pointwise_linear", "head", "classifier")


def round_filters(filters: int, width_coefficient: float, divisor: int = 8) -> int:
    """Channels scaled by the width coefficient, rounded to a multiple of `divisor` (never below 90%)."""
    scaled = filters * width_coefficient
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    return int(rounded + divisor if rounded < 0.9 * scaled else rounded)


def round_repeats(repeats: int, depth_coefficient: float) -> int:
    return int(math.ceil(depth_coefficient * repeats))


class ConvBNSwish(nn.Module):
    """k x k conv (no bias) -> batch norm -> swish."""

    features: int
    kernel: int = 1
    stride: int = 1
    dtype: Any = jnp.float32
    norm_axis: str | None = None

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.Conv(self.features, (self.kernel, self.kernel), (self.stride, self.stride), padding="SAME",
                    use_bias=False, dtype=self.dtype, name="conv")(x)
        return nn.swish(batch_norm(train, self.dtype, self.norm_axis, name="bn")(x))


class MBConv(nn.Module):
    """Mobile inverted bottleneck with squeeze-and-excitation (see the module docstring)."""

    features: int
    expand_ratio: int
    kernel: int
    stride: int
    se_ratio: float = 0.25
    dtype: Any = jnp.float32
    norm_axis: str | None = None

    @nn.compact
    def __call__(self, x, train: bool = False):
        cin = x.shape[-1]
        hidden = cin * self.expand_ratio
        y = x
        if self.expand_ratio != 1:
            y = nn.Conv(hidden, (1, 1), use_bias=False, dtype=self.dtype, name="expand")(y)
            y = nn.swish(batch_norm(train, self.dtype, self.norm_axis, name="expand_bn")(y))
        y = nn.Conv(hidden, (self.kernel, self.kernel), (self.stride, self.stride), padding="SAME",
                    feature_group_count=hidden, use_bias=False, dtype=self.dtype, name="depthwise")(y)
        y = nn.swish(batch_norm(train, self.dtype, self.norm_axis, name="depthwise_bn")(y))
        squeezed = max(1, int(cin * self.se_ratio))
        s = jnp.mean(y, axis=(1, 2), keepdims=True)
        s = nn.swish(nn.Conv(squeezed, (1, 1), dtype=self.dtype, name="se_reduce")(s))
        y = y * nn.sigmoid(nn.Conv(hidden, (1, 1), dtype=self.dtype, name="se_expand")(s))
        y = nn.Conv(self.features, (1, 1), use_bias=False, dtype=self.dtype, name="project")(y)
        y = batch_norm(train, self.dtype, self.norm_axis, name="project_bn")(y)
        return y + x if self.stride == 1 and cin == self.features else y


class MBStage(nn.Module):
    """`repeats` MBConv blocks; the first carries the stride."""

    features: int
    expand_ratio: int
    kernel: int
    stride: int
    repeats: int
    dtype: Any = jnp.float32
    norm_axis: str | None = None

    @nn.compact
    def __call__(self, x, train: bool = False):
        for i in range(self.repeats):
            x = MBConv(self.features, self.expand_ratio, self.kernel, self.stride if i == 0 else 1,
                       dtype=self.dtype, norm_axis=self.norm_axis)(x, train)
        return x


class EfficientNet(StagedNetwork):
    """EfficientNet-B0 by default (width and depth coefficients 1); `width` (the registry's channel
    multiplier) applies on top of the width coefficient. `small_images=True` (the default) uses the
    32x32 strides of the module docstring, False the ImageNet ones (stem stride 2)."""

    width_coefficient: float = 1.0
    depth_coefficient: float = 1.0
    small_images: bool = True

    def _filters(self, base: int) -> int:
        return channels(round_filters(base, self.width_coefficient), self.width)

    def stages(self) -> Sequence[Stage]:
        strides = SMALL_IMAGE_STRIDES if self.small_images else IMAGENET_STRIDES
        stem_stride = 1 if self.small_images else 2
        out: list[Stage] = [("stem", lambda name: ConvBNSwish(self._filters(32), 3, stem_stride, self.dtype,
                                                              self.norm_axis, name=name))]
        for i, ((e, k, _, c, r), s) in enumerate(zip(B0_STAGES, strides)):
            out.append((f"stage{i + 1}", lambda name, e=e, k=k, s=s, c=c, r=r: MBStage(
                self._filters(c), e, k, s, round_repeats(r, self.depth_coefficient), dtype=self.dtype,
                norm_axis=self.norm_axis, name=name)))
        out.append(("head", lambda name: ConvBNSwish(self._filters(1280), 1, 1, self.dtype, self.norm_axis, name=name)))
        out.append(("features", lambda name: GlobalPool(name=name)))
        return out + [("logits", lambda name: Logits(self.num_classes, dtype=self.dtype, name=name))]

    def layer_types(self, names: Sequence[str]) -> list[str]:
        """The type (see `TYPES`) of each "/"-joined weight path of this model's params."""
        out = []
        for name in names:
            parts = name.split("/")
            top = parts[0]
            if top in ("stem", "head"):
                out.append(top)
            elif top in ("logits", "features"):
                out.append("classifier")
            elif top.startswith("stage") and len(parts) >= 3 and parts[-2] in LAYER_TYPES:
                out.append(LAYER_TYPES[parts[-2]])
            else:
                raise ValueError(f"{name!r} is not a weight of {type(self).__name__}")
        return out

    def layer_groups(self, names: Sequence[str]) -> list[str]:
        """stem, block1..block7 (stage i), head, classifier per weight path."""
        groups = []
        for name, kind in zip(names, self.layer_types(names)):
            groups.append(f"block{name.split('/')[0][5:]}" if name.startswith("stage") else kind)
        return groups
