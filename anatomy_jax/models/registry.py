"""Build a model by name (the names `--model` accepts)."""

from __future__ import annotations

from typing import Any, Callable, Sequence

import jax.numpy as jnp
import numpy as np

from anatomy_jax.models.base import StagedNetwork
from anatomy_jax.models.convnets import MLP, VGG, AlexNet, SmallCNN
from anatomy_jax.models.efficientnet import EfficientNet
from anatomy_jax.models.resnets import ResNet, ResNeXt, WideResNet

_REGISTRY: dict[str, Callable[..., StagedNetwork]] = {
    "mlp": MLP,
    "cnn": SmallCNN,
    "alexnet": AlexNet,
    "vgg11": lambda **kw: VGG(config="vgg11", **kw),
    "vgg16": lambda **kw: VGG(config="vgg16", **kw),
    "vgg19": lambda **kw: VGG(config="vgg19", **kw),
    "resnet18": lambda **kw: ResNet(blocks=(2, 2, 2, 2), **kw),
    # CIFAR-style BasicBlock [3, 4, 6, 3]: the network behind WeightScale's stored "ResNet-50" RWC
    # dicts, whose layer names (layer1.0-2 .. layer4.0-2, conv1/conv2 + shortcut.0) are ResNet-34's
    "resnet34": lambda **kw: ResNet(blocks=(3, 4, 6, 3), **kw),
    "preact_resnet18": lambda **kw: ResNet(blocks=(2, 2, 2, 2), preact=True, **kw),
    "resnext29": ResNeXt,
    "resnext29_8x64d": lambda **kw: ResNeXt(cardinality=8, group_width=64, stage_features=256, **kw),
    "wrn16_4": lambda **kw: WideResNet(depth=16, widen_factor=4, **kw),
    "efficientnet_b0": EfficientNet,  # scaled for 32x32 inputs (stride-1 stem)
    "efficientnet_b4": lambda **kw: EfficientNet(width_coefficient=1.4, depth_coefficient=1.8, **kw),
}
MODEL_NAMES = tuple(_REGISTRY)


def check_model_names(names: Sequence[str]) -> None:
    """Raises ValueError naming every entry of `names` that is not a registry model."""
    unknown = [n for n in names if n not in _REGISTRY]
    if unknown:
        raise ValueError(f"unknown model(s) {unknown}; choose from {', '.join(MODEL_NAMES)}")


def create_model(name: str, num_classes: int = 10, width: float = 1.0, dtype: Any = jnp.float32,
                 **kwargs: Any) -> StagedNetwork:
    """The registry model `name` with `num_classes` outputs and channels scaled by `width`."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODEL_NAMES)}")
    if not width > 0:
        raise ValueError(f"width must be > 0, got {width}")
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    return _REGISTRY[name](num_classes=num_classes, width=width, dtype=dtype, **kwargs)



def layer_groups(model: StagedNetwork, names: Sequence[str]) -> list[str]:
    """The group of each weight path of `model` (names in depth order), as the RWC papers report them:
    `stem`, `block1`.. and `classifier` for residual networks and EfficientNet, `early`/`middle`/
    `late` (+ `classifier`) for VGG and AlexNet; other models split their non-classifier layers
    into thirds by depth (`early`, `middle`, `late`) and call `logits` the `classifier`."""
    method = getattr(model, "layer_groups", None)
    if method is not None:
        return list(method(names))
    body = [n for n in names if n.split("/", 1)[0] != "logits"]
    thirds = {}
    for part, label in zip(np.array_split(np.arange(len(body)), 3), ("early", "middle", "late")):
        thirds.update({body[i]: label for i in part})
    return [thirds.get(n, "classifier") for n in names]


def layer_types(model: StagedNetwork, names: Sequence[str]) -> list[str] | None:
    """The type of each weight path for models that define types (EfficientNet: `depthwise`,
    `pointwise`, `pointwise_linear`, `squeeze_excite`, ...), else None."""
    method = getattr(model, "layer_types", None)
    return None if method is None else list(method(names))
