"""Flax linen models with named intermediate representations, and a registry."""

from anatomy_jax.models.airbench import Airbench94, init_whitening, whitening_kernel
from anatomy_jax.models.base import StagedNetwork, channels
from anatomy_jax.models.convnets import MLP, VGG, AlexNet, SmallCNN
from anatomy_jax.models.efficientnet import EfficientNet
from anatomy_jax.models.registry import MODEL_NAMES, check_model_names, create_model, layer_groups, layer_types
from anatomy_jax.models.resnets import ResNet, ResNeXt, WideResNet

__all__ = ["Airbench94", "MLP", "MODEL_NAMES", "VGG", "AlexNet", "EfficientNet", "ResNeXt", "ResNet", "SmallCNN",
           "StagedNetwork", "WideResNet", "channels", "check_model_names", "create_model", "init_whitening",
           "layer_groups", "layer_types", "whitening_kernel"]
