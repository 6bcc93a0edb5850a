"""The neutral training config: what every run of a study trains with, poisoned or not.

`TrainConfig` holds the model, optimizer, schedule, batch, augmentation, adversarial-training and
interval settings of one run (the learning rate and seed are per run: see `RunSpec`). Clean
studies use it as it is; the pattern study adds its poison specs on top. Each field's help text
is the `--help` of the experiment scripts that include it.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax.numpy as jnp

from anatomy_jax.adversarial.attacks import NORMS
from anatomy_jax.data.datasets import Dataset
from anatomy_jax.models.registry import MODEL_NAMES, create_model
from anatomy_jax.train.optim import OPTIMIZERS, SCHEDULES, make_optimizer
from anatomy_jax.train.steps import AdversarialTraining, Trainer
from anatomy_jax.utils.fields import flag


DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """How one run trains (everything but its learning rate, seed and data)."""

    model: str = flag("cnn", f"architecture: {', '.join(MODEL_NAMES)}")
    width: float = flag(1.0, "channel width multiplier of the model")
    optimizer: str = flag("sgd", f"optimizer: {', '.join(OPTIMIZERS)} (sgd uses --momentum)")
    momentum: float = flag(0.9, "SGD momentum")
    nesterov: bool = flag(False, "use Nesterov momentum")
    schedule: str = flag("constant", f"learning-rate schedule: {', '.join(SCHEDULES)}")
    warmup_steps: int = flag(0, "linear warm-up steps before the schedule")
    weight_decay: float = flag(5e-4, "weight decay (L2 for SGD, decoupled for Adam)")
    label_smoothing: float = flag(0.0, "label smoothing of the cross entropy")
    augment: bool = flag(True, "random crop (pad 4 on images >= 32 px) and flip where the dataset allows it")
    dtype: str = flag("float32", "compute dtype: float32, or bfloat16 for mixed precision (parameters, optimizer "
                                 "state and logits stay float32; for GPU/TPU)")
    adversarial_eps: float = flag(0.0, "PGD adversarial training: radius of the attack on each training batch "
                                       "(pixels in [0, 1]; e.g. 8/255 = 0.031 on CIFAR-10, 0.3 on MNIST; "
                                       "0 = standard training)")
    adversarial_steps: int = flag(7, "PGD steps of adversarial training (step size 2.5 eps / steps)")
    adversarial_norm: str = flag("linf", f"norm of adversarial training's ball: {', '.join(NORMS)}")
    steps: int = flag(400, "training steps per run")
    batch_size: int = flag(128, "batch size")
    eval_every: int | None = flag(None, "evaluate on the test set every this many steps (auto: steps / 16, "
                                        "i.e. 16 points per curve)")
    checkpoint_every: int = flag(100, "save an orbax checkpoint every this many steps (and at each chunk's end)")
    keep_checkpoints: int = flag(3, "how many checkpoints to keep")

    def validate(self) -> None:
        """Raises ValueError naming the first bad value (dataset-dependent checks come later)."""
        if self.model not in MODEL_NAMES:
            raise ValueError(f"unknown model {self.model!r}; choose one of {', '.join(MODEL_NAMES)}")
        if not (self.width > 0 and math.isfinite(self.width)):
            raise ValueError(f"width must be > 0, got {self.width}")
        if self.eval_every is not None and self.eval_every <= 0:
            raise ValueError(f"eval_every must be > 0, got {self.eval_every}")
        for name in ("steps", "batch_size", "keep_checkpoints"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.checkpoint_every < 0:
            raise ValueError(f"checkpoint_every must be >= 0, got {self.checkpoint_every}")
        if self.dtype not in DTYPES:
            raise ValueError(f"unknown dtype {self.dtype!r}; choose one of {', '.join(DTYPES)}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.adversarial_eps < 0:
            raise ValueError(f"adversarial_eps must be >= 0, got {self.adversarial_eps}")
        if self.adversarial is not None:
            self.adversarial.validate()
        make_optimizer(self.optimizer, total_steps=self.steps, schedule=self.schedule, warmup_steps=self.warmup_steps,
                       momentum=self.momentum, weight_decay=self.weight_decay)

    @property
    def adversarial(self) -> AdversarialTraining | None:
        """The adversarial-training setting, None for standard training."""
        if not self.adversarial_eps:
            return None
        return AdversarialTraining(self.adversarial_eps, self.adversarial_steps, norm=self.adversarial_norm)

    @property
    def eval_interval(self) -> int:
        """`eval_every`, or steps / 16 (at least 1) when it is left on auto."""
        return self.eval_every if self.eval_every is not None else max(1, round(self.steps / 16))


def train_config_of(config: object) -> TrainConfig:
    """The `TrainConfig` part of a study config that extends it (its fields, nothing else)."""
    return TrainConfig(**{f.name: getattr(config, f.name) for f in dataclasses.fields(TrainConfig)})


def make_trainer(config: TrainConfig, data: Dataset) -> Trainer:
    """The model, optimizer and augmentation of `config` for `data` (shared by every run of it).

    Trainers are cached by (config, classes, image shape, flip): the compiled steps belong to the
    trainer, so a second study with the same settings (a notebook calling `train_and_evaluate`
    again) reuses them instead of compiling anew."""
    # the intervals do not change the trainer: a notebook that only evaluates more often reuses it
    config = dataclasses.replace(config, eval_every=None, checkpoint_every=0, keep_checkpoints=1)
    return _trainer(config, data.num_classes, data.image_shape, data.flip_ok)


@functools.lru_cache(maxsize=32)
def _trainer(config: TrainConfig, num_classes: int, image_shape: tuple[int, int, int], flip_ok: bool) -> Trainer:
    model = create_model(config.model, num_classes, width=config.width, dtype=DTYPES[config.dtype])
    tx = make_optimizer(config.optimizer, total_steps=config.steps, schedule=config.schedule,
                        warmup_steps=config.warmup_steps, momentum=config.momentum, nesterov=config.nesterov,
                        weight_decay=config.weight_decay)
    big = min(image_shape[:2]) >= 32
    return Trainer(model, tx, batch_size=config.batch_size, crop_padding=4 if (config.augment and big) else 0,
                   flip=config.augment and flip_ok, label_smoothing=config.label_smoothing,
                   adversarial=config.adversarial)
