"""Plain feed-forward architectures: MLP, a small CNN, AlexNet-style and VGG with batch norm."""

from __future__ import annotations

import re
from typing import Sequence

from anatomy_jax.models.base import (ConvNormAct, ConvStack, DenseAct, Flatten, GlobalPool, Logits, Stage,
                                     StagedNetwork, channels)


class MLP(StagedNetwork):
    """Flatten -> `hidden` ReLU layers (scaled by `width`) -> logits. Stages: hidden1.., features, logits."""

    hidden: Sequence[int] = (256, 256)

    def stages(self) -> Sequence[Stage]:
        sizes = [channels(h, self.width) for h in self.hidden]
        names = [f"hidden{i + 1}" for i in range(len(sizes) - 1)] + ["features"]
        out: list[Stage] = [(n, lambda name, f=f: DenseAct(f, dtype=self.dtype, name=name)) for n, f in zip(names, sizes)]
        return out + [("logits", lambda name: Logits(self.num_classes, dtype=self.dtype, name=name))]


class SmallCNN(StagedNetwork):
    """3x3 conv layers (default 16, 32 channels x width; each ReLU + 2x2 max pool), then a dense
    layer of `hidden` units (128 x width; `hidden=0`: the flattened conv output is the feature).

    No batch norm, so it is cheap and its per-example gradients need no running statistics.
    Stages: conv1, conv2, ..., features, logits.
    """

    conv_channels: Sequence[int] = (16, 32)
    hidden: int = 128

    def stages(self) -> Sequence[Stage]:
        out: list[Stage] = [
            (f"conv{i + 1}", lambda name, c=c: ConvNormAct(channels(c, self.width), norm=False, pool=True,
                                                          dtype=self.dtype, name=name))
            for i, c in enumerate(self.conv_channels)
        ]
        if self.hidden:
            out.append(("features", lambda name: DenseAct(channels(self.hidden, self.width), dtype=self.dtype,
                                                          name=name)))
        else:
            out.append(("features", lambda name: Flatten(name=name)))
        return out + [("logits", lambda name: Logits(self.num_classes, dtype=self.dtype, name=name))]


class AlexNet(StagedNetwork):
    """AlexNet for small images (as in the CIFAR AlexNet of Zhang et al. / Agrawal et al.).

    conv 64 (pool), conv 192 (pool), conv 384, conv 256, conv 256 (pool), two dense layers of
    512 and 256 units (all x width), batch norm after each conv. Stages: conv1..conv5, fc1,
    features, logits.
    """

    def stages(self) -> Sequence[Stage]:
        spec = [(64, True), (192, True), (384, False), (256, False), (256, True)]
        out: list[Stage] = [
            (f"conv{i + 1}", lambda name, c=c, p=p: ConvNormAct(channels(c, self.width), pool=p, dtype=self.dtype, norm_axis=self.norm_axis,
                                                               name=name))
            for i, (c, p) in enumerate(spec)
        ]
        out.append(("fc1", lambda name: DenseAct(channels(512, self.width), dtype=self.dtype, name=name)))
        out.append(("features", lambda name: DenseAct(channels(256, self.width), dtype=self.dtype, name=name)))
        return out + [("logits", lambda name: Logits(self.num_classes, dtype=self.dtype, name=name))]

    def layer_groups(self, names: Sequence[str]) -> list[str]:
        """The paper's groups: conv1 early, conv2-3 middle, conv4-5 late, the dense layers classifier."""
        convs = {"conv1": "early", "conv2": "middle", "conv3": "middle", "conv4": "late", "conv5": "late"}
        return ["classifier" if _classifier_or(n, (*convs, "fc1", "features", "logits")) else convs[n.split("/")[0]]
                for n in names]


VGG_CONFIGS = {
    "vgg11": ((64,), (128,), (256, 256), (512, 512), (512, 512)),
    "vgg16": ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512)),
    "vgg19": ((64, 64), (128, 128), (256, 256, 256, 256), (512, 512, 512, 512), (512, 512, 512, 512)),
}


def _classifier_or(name: str, tops: Sequence[str]) -> bool:
    top = name.split("/", 1)[0]
    if top not in tops:
        raise ValueError(f"{name!r} is not a weight of this model")
    return top in ("fc1", "features", "logits")


class VGG(StagedNetwork):
    """VGG with batch norm (CIFAR-style): five conv blocks each ending in a 2x2 max pool,
    global average pooling, one linear classifier. Stages: block1..block5, features, logits."""

    config: str = "vgg11"

    def stages(self) -> Sequence[Stage]:
        blocks = VGG_CONFIGS[self.config]
        out: list[Stage] = [
            (f"block{i + 1}", lambda name, b=b: ConvStack(tuple(channels(c, self.width) for c in b), dtype=self.dtype, norm_axis=self.norm_axis,
                                                         name=name))
            for i, b in enumerate(blocks)
        ]
        out.append(("features", lambda name: GlobalPool(name=name)))
        return out + [("logits", lambda name: Logits(self.num_classes, dtype=self.dtype, name=name))]

    def layer_groups(self, names: Sequence[str]) -> list[str]:
        """The paper's groups by conv layer index in depth order: 1-4 early, 5-11 middle, 12+ late
        (VGG-19: 4 / 7 / 5 convs); the linear classifier is `classifier`."""
        blocks = tuple(f"block{i + 1}" for i in range(len(VGG_CONFIGS[self.config])))
        convs = sorted((n for n in names if not _classifier_or(n, (*blocks, "features", "logits"))),
                       key=lambda n: [int(t) for t in re.findall(r"\d+", n)])
        index = {n: i + 1 for i, n in enumerate(convs)}
        return ["classifier" if n not in index else "early" if index[n] <= 4 else "middle" if index[n] <= 11
                else "late" for n in names]
