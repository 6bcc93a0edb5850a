"""Build a model by name (the names `--model` accepts)."""

from __future__ import annotations

from typing import Any, Callable, Sequence

import jax.numpy as jnp

from anatomy_jax.models.base import StagedNetwork
from anatomy_jax.models.convnets import MLP, VGG, AlexNet, SmallCNN
from anatomy_jax.models.resnets import ResNet, ResNeXt, WideResNet

_REGISTRY: dict[str, Callable[..., StagedNetwork]] = {
    "mlp": MLP,
    "cnn": SmallCNN,
    "alexnet": AlexNet,
    "vgg11": lambda **kw: VGG(config="vgg11", **kw),
    "vgg16": lambda **kw: VGG(config="vgg16", **kw),
    "vgg19": lambda **kw: VGG(config="vgg19", **kw),
    "resnet18": lambda **kw: ResNet(blocks=(2, 2, 2, 2), **kw),
    "resnet34": lambda **kw: ResNet(blocks=(3, 4, 6, 3), **kw),
    "preact_resnet18": lambda **kw: ResNet(blocks=(2, 2, 2, 2), preact=True, **kw),
    "resnext29": ResNeXt,
    "resnext29_8x64d": lambda **kw: ResNeXt(cardinality=8, group_width=64, stage_features=256, **kw),
    "wrn16_4": lambda **kw: WideResNet(depth=16, widen_factor=4, **kw),
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

