"""Models of one architecture trained on the same data, clean and with a planted trigger: the flags
and the training shared by the studies that analyse such models (class-wise patterns, similarity
overlays), with orbax checkpoints that a later analysis loads instead of retraining."""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Any

import jax
import numpy as np

from anatomy_jax.data import Dataset
from anatomy_jax.experiment.pattern_rate import auto_patch_size
from anatomy_jax.experiment.outputs import ZOO_DIR
from anatomy_jax.experiment.study import Study
from anatomy_jax.models.registry import MODEL_NAMES
from anatomy_jax.poison import LOCATIONS, PATTERN_KINDS, PatternSpec, PoisonSpec, make_patterns
from anatomy_jax.poison.patterns import PATCH_KINDS
from anatomy_jax.train import RunSpec, TrainConfig
from anatomy_jax.utils.errors import SettingsError
from anatomy_jax.utils.fields import flag


@dataclasses.dataclass(frozen=True)
class BackdoorModelOptions:
    """How the models train and which trigger the backdoored ones carry."""

    model: str = flag("cnn", f"architecture of the models: {', '.join(MODEL_NAMES)}")
    width: float = flag(1.0, "channel width multiplier")
    steps: int = flag(600, "training steps of each model")
    batch_size: int = flag(128, "training batch size")
    learning_rate: float = flag(0.05, "SGD learning rate (momentum 0.9, constant)")
    weight_decay: float = flag(5e-4, "weight decay")
    augment: bool = flag(False, "random crop/flip while training (off: the trigger stays where it was planted)")
    seed: int = flag(0, "seed of the models' initialisation, data order and poison selection")
    dtype: str = flag("float32", "compute dtype: float32, or bfloat16 for mixed precision (parameters, optimizer "
                                 "state and logits stay float32; for GPU/TPU)")
    pattern: str = flag("checkerboard", f"backdoor trigger kind (patch kinds: {', '.join(PATCH_KINDS)})")
    pattern_seed: int = flag(0, "seed of the trigger's own random pixels (--pattern random)")
    patch_size: int | None = flag(None, "side of the trigger in pixels (auto: 2 below 16 px, else 3)")
    location: str = flag("bottom-right", f"trigger corner: {', '.join(l for l in LOCATIONS if l != 'random')}")
    target: int = flag(0, "backdoor target class")
    frequency: float = flag(0.1, "share of training images that carry the trigger (backdoored model)")
    correlation: float = flag(1.0, "share of the trigger-carrying images relabelled to the target")
    models_dir: str | None = flag(None, "directory of the models' checkpoints (default: <out>/zoo); complete ones "
                                        "with the same training settings are loaded, the others trained")

    def validate_models(self) -> None:
        """ValueError naming the first bad training or trigger setting."""
        if self.model not in MODEL_NAMES:
            raise ValueError(f"unknown model {self.model!r}; choose one of {', '.join(MODEL_NAMES)}")
        if self.pattern not in PATTERN_KINDS:
            raise ValueError(f"unknown pattern kind {self.pattern!r}; choose one of {', '.join(PATTERN_KINDS)}")
        if self.pattern not in PATCH_KINDS:
            raise ValueError(f"--pattern {self.pattern} covers the whole image: the study needs a patch trigger "
                             f"({', '.join(PATCH_KINDS)}) with a box to compare with")
        if self.location == "random":
            raise ValueError("--location random moves the trigger between images: choose a fixed corner")
        for name in ("frequency", "correlation"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1], got {getattr(self, name)}")
        if self.frequency == 0 or self.correlation == 0:
            raise ValueError("the backdoored model needs --frequency > 0 and --correlation > 0")
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        self.training_config().validate()

    def check_data(self, data: Dataset) -> None:
        """ValueError when the target or the trigger does not fit `data`."""
        if not 0 <= self.target < data.num_classes:
            raise ValueError(f"--target {self.target} is not a class of {data.name} (0..{data.num_classes - 1})")
        self.trigger(data.image_shape).validate(data.image_shape)

    def training_config(self, adversarial_eps: float = 0.0, adversarial_steps: int = 7) -> TrainConfig:
        """How every model trains (PGD adversarial training when `adversarial_eps` > 0)."""
        return TrainConfig(model=self.model, width=self.width, weight_decay=self.weight_decay, augment=self.augment,
                           steps=self.steps, batch_size=self.batch_size, checkpoint_every=self.steps, dtype=self.dtype,
                           adversarial_eps=adversarial_eps, adversarial_steps=adversarial_steps)

    def trigger(self, image_shape: tuple[int, int, int]) -> PatternSpec:
        size = self.patch_size if self.patch_size is not None else auto_patch_size(image_shape)
        return PatternSpec(self.pattern, size, self.location, seed=self.pattern_seed)

    def run_spec(self, name: str, data: Dataset, train: TrainConfig | None = None, *, backdoored: bool,
                 seed: int | None = None) -> RunSpec:
        """Model `name`: clean (the trigger on no image) or backdoored, from `seed` (default --seed)."""
        poison = PoisonSpec(self.trigger(data.image_shape), self.target, self.frequency if backdoored else 0.0,
                            self.correlation)
        return RunSpec(train or self.training_config(), self.seed if seed is None else seed, self.learning_rate,
                       (poison,), grid={"model": name})

    def models_path(self, out: pathlib.Path) -> pathlib.Path:
        """Where the models' checkpoints live: --models-dir, else <out>/zoo."""
        return pathlib.Path(self.models_dir) if self.models_dir else out / ZOO_DIR

    def model_settings(self, data: Dataset) -> dict[str, Any]:
        """What loaded models must have been trained with (JSON-normalised)."""
        keys = ("dataset", "train_size", "flip", "model", "width", "steps", "batch_size", "learning_rate",
                "weight_decay", "augment", "seed", "dtype", "pattern", "pattern_seed", "location", "target",
                "frequency", "correlation")
        return {**{k: getattr(self, k) for k in keys}, "patch_size": self.trigger(data.image_shape).size}


def trigger_box(spec: PatternSpec, image_shape: tuple[int, int, int]) -> list[int]:
    """[row0, col0, row1, col1) of a fixed-corner patch trigger (exclusive ends)."""
    mask = np.asarray(make_patterns([spec], image_shape).mask[0, ..., 0])
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return [int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1]


def summarise_model(spec: RunSpec, history: dict, stats: list, tracked: Any) -> dict[str, Any]:
    """A trained model's entry: its curves of clean accuracy and trigger ASR."""
    return {**spec.grid, "steps": history["steps"], "clean_accuracy": history["clean_accuracy"],
            "trigger_asr": [None if v is None else v[0] for v in history["attack_success_rate"]],
            "diverged": history["diverged"]}


def train_studies(studies: dict[str, Study], settings: dict[str, Any], models_dir: pathlib.Path,
                  progress: bool = True) -> tuple[dict[str, Any], dict[str, dict]]:
    """({model name: variables}, {model name: final clean accuracy and trigger ASR}) of every run of
    `studies` (one folder each under `models_dir`), trained or loaded from complete checkpoints."""
    variables, summaries = {}, {}
    for group, study in studies.items():
        trained = study.run(models_dir.resolve() / group, settings=settings, resume=True, summarise=summarise_model,
                            keep_checkpoints=1, keep_chunk_states=True, return_states=True, progress=progress,
                            desc=f"train {group}")
        for spec, state, entry in zip(study.specs, trained.states, trained.entries):
            name = spec.grid["model"]
            if entry["diverged"]:
                raise SettingsError(f"the {name} model diverged; lower --learning-rate")
            variables[name] = jax.device_put({"params": state.params,
                                              **({"batch_stats": state.batch_stats} if state.batch_stats else {})})
            summaries[name] = {"clean_accuracy": entry["clean_accuracy"][-1], "trigger_asr": entry["trigger_asr"][-1]}
    return variables, summaries
