"""Residual networks for small images: ResNet-18/34 (CIFAR-style), PreAct ResNet-18, ResNeXt-29 (small
and the paper's 8x64d), Wide ResNet (WRN-16-4)."""

from __future__ import annotations

import functools
import re

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from anatomy_jax.models.base import ConvNormAct, GlobalPool, Logits, Stage, StagedNetwork, batch_norm, channels


def _bn(train: bool, dtype: Any, name: str | None = None, axis: str | None = None) -> nn.BatchNorm:
    return batch_norm(train, dtype, axis, name)


def residual_layer_groups(names: Sequence[str]) -> list[str]:
    """The paper's groups of a residual network's weight paths: `stem`, `block<i>` for stage i
    (`layer<i>`, `stage<i>` or `group<i>`; shortcut convs belong to their block), `classifier`."""
    groups = []
    for name in names:
        top = name.split("/", 1)[0]
        stage = re.fullmatch(r"(?:layer|stage|group)(\d+)", top)
        if stage:
            groups.append(f"block{stage.group(1)}")
        elif top in ("stem", "classifier"):
            groups.append(top)
        elif top in ("features", "logits"):
            groups.append("classifier")
        else:
            raise ValueError(f"{name!r} is not a weight of a residual network")
    return groups


class SplitGroupConv:
    """`lax.conv_general_dilated` that computes a grouped convolution on CPU as one ordinary
    convolution per group, concatenated (same parameters, same result up to float rounding).

    XLA:CPU runs `feature_group_count > 1` convolutions and their gradients 9-25x slower than the
    split form (measured with jax 0.10.2 on 2 cores, batch 128, 4 groups: forward + backward
    73 -> 8 ms at 8x8x16, 47 -> 3 ms at 4x4x32, 5.9 -> 1.0 s at 32x32x64); GPU and TPU keep the
    fused grouped kernel. The rule depends only on the backend, so it is deterministic."""

    def __call__(self, lhs, rhs, window_strides, padding, *, feature_group_count: int = 1, **kwargs):
        groups = feature_group_count
        if groups == 1 or jax.default_backend() != "cpu":
            return jax.lax.conv_general_dilated(lhs, rhs, window_strides, padding,
                                                feature_group_count=groups, **kwargs)
        cin, cout = lhs.shape[-1] // groups, rhs.shape[-1] // groups
        return jnp.concatenate([
            jax.lax.conv_general_dilated(lhs[..., g * cin:(g + 1) * cin], rhs[..., g * cout:(g + 1) * cout],
                                         window_strides, padding, **kwargs)
            for g in range(groups)], axis=-1)


def _conv(features: int, kernel: int, stride: int, dtype: Any, groups: int = 1, name: str | None = None) -> nn.Conv:
    return nn.Conv(features, (kernel, kernel), (stride, stride), padding="SAME", use_bias=False,
                   feature_group_count=groups, dtype=dtype, name=name,
                   conv_general_dilated_cls=SplitGroupConv if groups > 1 else None)


def _projection_shortcut(x, features: int, stride: int, train: bool, dtype: Any, axis: str | None = None):
    """Identity, or a 1x1 conv + batch norm when the block changes the shape (call in a compact method)."""
    if stride == 1 and x.shape[-1] == features:
        return x
    return _bn(train, dtype, "shortcut_bn", axis)(_conv(features, 1, stride, dtype, name="shortcut")(x))


class BasicBlock(nn.Module):
    """Two 3x3 convs with batch norm; projection shortcut when the shape changes (He et al. 2016)."""

    features: int
    stride: int = 1
    dtype: Any = jnp.float32
    norm_axis: str | None = None

    @nn.compact
    def __call__(self, x, train: bool = False):
        bn = functools.partial(_bn, train, self.dtype, axis=self.norm_axis)
        y = nn.relu(bn()(_conv(self.features, 3, self.stride, self.dtype)(x)))
        y = _bn(train, self.dtype, axis=self.norm_axis)(_conv(self.features, 3, 1, self.dtype)(y))
        return nn.relu(_projection_shortcut(x, self.features, self.stride, train, self.dtype, self.norm_axis) + y)


class PreActBlock(nn.Module):
    """Pre-activation basic block: BN-ReLU-conv twice, identity-style shortcut (He et al. 2016b)."""

    features: int
    stride: int = 1
    dtype: Any = jnp.float32
    norm_axis: str | None = None

    @nn.compact
    def __call__(self, x, train: bool = False):
        out = nn.relu(_bn(train, self.dtype, axis=self.norm_axis)(x))
        shortcut = x
        if self.stride != 1 or x.shape[-1] != self.features:
            shortcut = _conv(self.features, 1, self.stride, self.dtype, name="shortcut")(out)
        y = _conv(self.features, 3, self.stride, self.dtype)(out)
        y = _conv(self.features, 3, 1, self.dtype)(nn.relu(_bn(train, self.dtype, axis=self.norm_axis)(y)))
        return y + shortcut


class ResNeXtBlock(nn.Module):
    """Bottleneck with a grouped 3x3 conv of `cardinality` groups (Xie et al. 2017)."""

    features: int
    inner: int
    cardinality: int
    stride: int = 1
    dtype: Any = jnp.float32
    norm_axis: str | None = None

    @nn.compact
    def __call__(self, x, train: bool = False):
        y = nn.relu(_bn(train, self.dtype, axis=self.norm_axis)(_conv(self.inner, 1, 1, self.dtype)(x)))
        y = nn.relu(_bn(train, self.dtype, axis=self.norm_axis)(
            _conv(self.inner, 3, self.stride, self.dtype, groups=self.cardinality)(y)))
        y = _bn(train, self.dtype, axis=self.norm_axis)(_conv(self.features, 1, 1, self.dtype)(y))
        return nn.relu(_projection_shortcut(x, self.features, self.stride, train, self.dtype, self.norm_axis) + y)


class ResidualStage(nn.Module):
    """`num_blocks` blocks of one kind; the first one carries the stride."""

    kind: str
    num_blocks: int
    features: int
    stride: int
    inner: int = 0
    cardinality: int = 1
    dtype: Any = jnp.float32
    norm_axis: str | None = None

    @nn.compact
    def __call__(self, x, train: bool = False):
        for i in range(self.num_blocks):
            stride = self.stride if i == 0 else 1
            if self.kind == "basic":
                x = BasicBlock(self.features, stride, self.dtype, self.norm_axis)(x, train)
            elif self.kind == "preact":
                x = PreActBlock(self.features, stride, self.dtype, self.norm_axis)(x, train)
            else:
                x = ResNeXtBlock(self.features, self.inner, self.cardinality, stride, self.dtype,
                                 self.norm_axis)(x, train)
        return x


class PreActHead(nn.Module):
    """Final BN-ReLU of a pre-activation network, then global average pooling."""

    dtype: Any = jnp.float32
    norm_axis: str | None = None

    @nn.compact
    def __call__(self, x, train: bool = False):
        return jnp.mean(nn.relu(_bn(train, self.dtype, axis=self.norm_axis)(x)), axis=(1, 2))


class ResNet(StagedNetwork):
    """CIFAR-style ResNet: 3x3 stem (64 x width), four stages (64, 128, 256, 512 x width; strides
    1, 2, 2, 2), global average pooling, linear classifier. `preact=True` gives PreAct ResNet.
    Stages: stem, layer1..layer4, features, logits."""

    blocks: Sequence[int] = (2, 2, 2, 2)
    preact: bool = False

    def layer_groups(self, names: Sequence[str]) -> list[str]:
        """stem, block1.., classifier per weight path (see `residual_layer_groups`)."""
        return residual_layer_groups(names)

    def stages(self) -> Sequence[Stage]:
        kind = "preact" if self.preact else "basic"
        stem_channels = channels(64, self.width)
        if self.preact:
            out: list[Stage] = [("stem", lambda name: _PlainConv(stem_channels, self.dtype, name=name))]
        else:
            out = [("stem", lambda name: ConvNormAct(stem_channels, dtype=self.dtype, norm_axis=self.norm_axis,
                                                         name=name))]
        for i, n in enumerate(self.blocks):
            out.append((f"layer{i + 1}", lambda name, i=i, n=n: ResidualStage(
                kind, n, channels(64 * 2 ** i, self.width), 1 if i == 0 else 2, dtype=self.dtype,
                norm_axis=self.norm_axis, name=name)))
        out.append(("features", (lambda name: PreActHead(self.dtype, self.norm_axis, name=name)) if self.preact
                    else (lambda name: GlobalPool(name=name))))
        return out + [("logits", lambda name: Logits(self.num_classes, dtype=self.dtype, name=name))]


class _PlainConv(nn.Module):
    """A bias-free 3x3 conv (the pre-activation stem)."""

    features: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        return _conv(self.features, 3, 1, self.dtype)(x)


class ResNeXt(StagedNetwork):
    """ResNeXt-29 for small images (Xie et al. 2017); the defaults are a small cardinality/width
    variant: 3x3 stem (64 x width), three stages of `blocks_per_stage` bottleneck blocks with
    `cardinality` groups of `group_width` x 2^stage x width channels, outputs `stage_features` x
    2^stage x width (128, 256, 512; strides 1, 2, 2). The paper's ResNeXt-29 8x64d is
    cardinality 8, group width 64, stage features 256 (34.4M parameters).
    Stages: stem, stage1..stage3, features, logits."""

    cardinality: int = 4
    group_width: int = 16
    blocks_per_stage: int = 3
    stage_features: int = 128

    def layer_groups(self, names: Sequence[str]) -> list[str]:
        """stem, block1.., classifier per weight path (see `residual_layer_groups`)."""
        return residual_layer_groups(names)

    def stages(self) -> Sequence[Stage]:
        out: list[Stage] = [("stem", lambda name: ConvNormAct(channels(64, self.width), dtype=self.dtype,
                                                              norm_axis=self.norm_axis, name=name))]
        for s in range(3):
            inner = self.cardinality * channels(self.group_width * 2 ** s, self.width)
            out.append((f"stage{s + 1}", lambda name, s=s, inner=inner: ResidualStage(
                "resnext", self.blocks_per_stage, channels(self.stage_features * 2 ** s, self.width),
                1 if s == 0 else 2,
                inner=inner, cardinality=self.cardinality, dtype=self.dtype, norm_axis=self.norm_axis,
                name=name)))
        out.append(("features", lambda name: GlobalPool(name=name)))
        return out + [("logits", lambda name: Logits(self.num_classes, dtype=self.dtype, name=name))]


class WideResNet(StagedNetwork):
    """Wide ResNet WRN-`depth`-`widen_factor` for small images (Zagoruyko & Komodakis 2016):
    3x3 stem (16 x width), three groups of (depth - 4) / 6 pre-activation basic blocks with
    16k, 32k, 64k x width channels (k = widen_factor; strides 1, 2, 2; 1x1 projection shortcut
    where the shape changes), final BN-ReLU, global average pooling, linear classifier. Dropout
    inside the blocks is 0 (the paper's setting without dropout). WRN-16-4 has 2.7M parameters.
    Stages: stem, group1..group3, features, logits."""

    depth: int = 16
    widen_factor: int = 4

    def layer_groups(self, names: Sequence[str]) -> list[str]:
        """stem, block1.., classifier per weight path (see `residual_layer_groups`)."""
        return residual_layer_groups(names)

    def stages(self) -> Sequence[Stage]:
        if self.depth < 10 or (self.depth - 4) % 6:
            raise ValueError(f"depth must be 6n + 4 with n >= 1 (10, 16, 22, 28, ...), got {self.depth}")
        if self.widen_factor < 1:
            raise ValueError(f"widen_factor must be >= 1, got {self.widen_factor}")
        blocks = (self.depth - 4) // 6
        out: list[Stage] = [("stem", lambda name: _PlainConv(channels(16, self.width), self.dtype, name=name))]
        for g in range(3):
            out.append((f"group{g + 1}", lambda name, g=g: ResidualStage(
                "preact", blocks, channels(16 * self.widen_factor * 2 ** g, self.width), 1 if g == 0 else 2,
                dtype=self.dtype, norm_axis=self.norm_axis, name=name)))
        out.append(("features", lambda name: PreActHead(self.dtype, self.norm_axis, name=name)))
        return out + [("logits", lambda name: Logits(self.num_classes, dtype=self.dtype, name=name))]
