"""Relative weight change per layer over training, and its clusters (seed 003).

Every model x seed trains in one study (`anatomy_jax.experiment.study`: the seeds of a model as
one sweep, models one after another) with constant-learning-rate SGD (momentum 0.9); one RWC
tracker per run records the RWC of every weight tensor once per epoch (layers in depth order), and
the study's orbax checkpoints in `checkpoints/<step>/` hold the states and RWC histories
(`--resume` continues from them). RWC is averaged over seeds, then the layers x epochs matrix is
cleaned and clustered (WeightScale). Optionally on poisoned data (`frequency` > 0) to compare
clean and poisoned dynamics. `run_weight_change(config, workdir)` runs what
`experiments/weight_change.py` runs.
"""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Any

import numpy as np

from anatomy_jax.data import Dataset
from anatomy_jax.dynamics import MODES, RWCTracker, cluster_layers, depth_order
from anatomy_jax.experiment.options import DataOptions, DeviceOptions, OutputOptions, resumable_settings
from anatomy_jax.experiment.outputs import (CHECKPOINT_DIR, RESULTS_FILE, default_out_dir, environment,
                                            prepare_output_dir)
from anatomy_jax.utils.serialize import json_matrix, matrix_from_json, write_json
from anatomy_jax.experiment.study import Study, stream_results
from anatomy_jax.models import MODEL_NAMES, check_model_names
from anatomy_jax.poison import PatternSpec, PoisonSpec
from anatomy_jax.train import RunSpec, TrainConfig
from anatomy_jax.utils import flag, settings_errors

# The paper's constant learning rates and weight decays (Agrawal et al. 2020; SGD, momentum 0.9).
# AlexNet's is not in the text available here: 0.01 / 5e-4 is an inferred choice.
PAPER_SETTINGS = {"resnet18": (0.1, 1e-4), "vgg19": (0.05, 5e-4), "alexnet": (0.01, 5e-4)}
DEFAULT_SETTINGS = (0.05, 5e-4)


@dataclasses.dataclass(frozen=True)
class WeightChangeConfig(OutputOptions, DeviceOptions, DataOptions):
    """Settings of the weight-change study; defaults suit digits on 2 CPU cores (a few minutes)."""

    models: tuple[str, ...] = flag(("cnn", "vgg11", "resnet18"), f"architectures: {', '.join(MODEL_NAMES)}")
    width: float = flag(0.25, "channel width multiplier (reduced for CPU runs; 1 for the paper)")
    epochs: int = flag(20, "training epochs (RWC is recorded once per epoch)")
    batch_size: int = flag(128, "batch size")
    learning_rate: float | None = flag(None, "constant learning rate (auto: the paper's per model, "
                                             "resnet18 0.1, vgg19 0.05, alexnet 0.01; else 0.05)")
    weight_decay: float | None = flag(None, "weight decay (auto: resnet18 1e-4, else 5e-4)")
    momentum: float = flag(0.9, "SGD momentum")
    augment: bool = flag(True, "random crop/flip where the dataset allows it")
    dtype: str = flag("float32", "compute dtype: float32, or bfloat16 for mixed precision (parameters, optimizer "
                                 "state and logits stay float32; for GPU/TPU)")
    seeds: tuple[int, ...] = flag((0, 1), "seeds; RWC is averaged over them")
    mode: str = flag("l1_ratio", f"RWC definition: {', '.join(MODES)}")
    frequency: float = flag(0.0, "share of training images carrying a pattern (0 = clean data)")
    correlation: float = flag(1.0, "P(label = target | pattern) when frequency > 0")
    max_k: int = flag(10, "largest k tried by k-means")
    drop_first_last: bool = flag(False, "drop the first and last layer before clustering")
    outlier_std: float = flag(2.0, "replace values beyond this many standard deviations by the layer mean")
    checkpoint_every: int = flag(5, "save an orbax checkpoint (state and RWC history) every this many epochs")

    def validate(self) -> None:
        self.validate_data()
        self.validate_devices()
        self.validate_output()
        check_model_names(self.models)
        if self.mode not in MODES:
            raise ValueError(f"unknown RWC mode {self.mode!r}; choose one of {', '.join(MODES)}")
        if self.epochs < 2:
            raise ValueError(f"epochs must be >= 2, got {self.epochs}")
        if not 0.0 <= self.frequency <= 1.0 or not 0.0 <= self.correlation <= 1.0:
            raise ValueError("frequency and correlation must lie in [0, 1]")
        if self.max_k < 1 or self.outlier_std <= 0:
            raise ValueError("max_k must be >= 1 and outlier_std > 0")
        if self.checkpoint_every < 1:
            raise ValueError(f"checkpoint_every must be >= 1 epoch, got {self.checkpoint_every}")

    def training_config(self, model: str, steps_per_epoch: int) -> TrainConfig:
        """How `model` trains in this study (constant learning rate, evaluated once per epoch)."""
        wd = self.weight_decay if self.weight_decay is not None else PAPER_SETTINGS.get(model, DEFAULT_SETTINGS)[1]
        return TrainConfig(model=model, width=self.width, momentum=self.momentum, weight_decay=wd,
                           augment=self.augment, dtype=self.dtype, steps=self.epochs * steps_per_epoch,
                           batch_size=self.batch_size,
                           eval_every=steps_per_epoch, checkpoint_every=steps_per_epoch * self.checkpoint_every,
                           keep_checkpoints=2)

    def learning_rate_of(self, model: str) -> float:
        return self.learning_rate if self.learning_rate is not None else PAPER_SETTINGS.get(model, DEFAULT_SETTINGS)[0]

    def run_specs(self, data: Dataset, models: tuple[str, ...] | None = None) -> list[RunSpec]:
        """Model x seed (seeds of a model consecutive, so each model's seeds form one sweep)."""
        steps_per_epoch = len(data.train) // self.batch_size
        if steps_per_epoch < 1:
            raise ValueError(f"batch size {self.batch_size} exceeds the {len(data.train)} training images")
        poisons = ()
        if self.frequency > 0:
            size = 2 if min(data.image_shape[:2]) < 16 else 3
            poisons = (PoisonSpec(PatternSpec("checkerboard", size), 0, self.frequency, self.correlation),)
        return [RunSpec(self.training_config(model, steps_per_epoch), seed, self.learning_rate_of(model), poisons,
                        grid={"model": model, "seed": seed})
                for model in (models or self.models) for seed in self.seeds]


def _summarise(mode: str, layer_names: dict[str, tuple[str, ...]]):
    """The results entry of one run: per-epoch RWC (layers in depth order) and accuracy curve."""

    def summarise(spec: RunSpec, history: dict, stats: list, tracked: Any) -> dict[str, Any]:
        layers, matrix = RWCTracker.restore(mode, tracked or [], None).matrix()
        order = depth_order(layers, layer_names[spec.config.model])
        matrix = matrix[[layers.index(name) for name in order]] if layers else matrix
        asr = history.get("attack_success_rate")
        return {"model": spec.config.model, "seed": spec.seed, "learning_rate": spec.learning_rate,
                "weight_decay": spec.config.weight_decay, "layers": order, "rwc": json_matrix(matrix),
                "epochs": list(range(1, matrix.shape[1] + 1)), "clean_accuracy": history["clean_accuracy"],
                "attack_success_rate": [None if a is None else a[0] for a in asr] if asr else None,
                "diverged": history["diverged"]}

    return summarise


def _tracking(mode: str):
    def tracking(trainer, specs, prepared, params, restored):
        if restored is None:
            return [RWCTracker(mode, initial_params=p) for p in params]
        return [RWCTracker.restore(mode, records, p) for records, p in zip(restored, params)]

    return tracking


def train_models_rwc(config: WeightChangeConfig, data: Dataset, models: tuple[str, ...] | None = None,
                     checkpoint_dir: str | pathlib.Path | None = None, progress: bool = False,
                     on_start=None, on_update=None, study: Study | None = None) -> list[dict[str, Any]]:
    """Trains every model x seed (one RWC tracker per run); returns one record per run: per-epoch
    RWC (layers in depth order), accuracy curve, learning rate. With `checkpoint_dir`, the study
    checkpoints there and `config.resume` continues from it."""
    if study is None:
        with settings_errors():
            study = Study.prepare(config.run_specs(data, models), data, config.sweep_options())
    layer_names = {c.model: t.model.layer_names for c, t in study.trainers.items()}
    outcome = study.run(checkpoint_dir, settings=resumable_settings(config), resume=config.resume,
                        summarise=_summarise(config.mode, layer_names), keep_checkpoints=2,
                        tracking=_tracking(config.mode), on_start=on_start, on_update=on_update,
                        progress=progress, desc="weight_change")
    return outcome.entries


def train_model_rwc(config: WeightChangeConfig, data: Dataset, model: str) -> list[dict[str, Any]]:
    """The records of one model's seeds (no checkpoints)."""
    return train_models_rwc(config, data, (model,))


def _mean_over_seeds(records: list[dict]) -> np.ndarray:
    stack = np.stack([matrix_from_json(r["rwc"]) for r in records])
    with np.errstate(all="ignore"):
        return np.nanmean(stack, axis=0)


def run_weight_change(config: WeightChangeConfig, workdir: str | pathlib.Path | None = None, *,
                      progress: bool = True) -> dict[str, Any]:
    """Trains every model x seed, aggregates and clusters, writes results.json and the figures."""
    with settings_errors():  # every check that can fail runs before --out is touched
        config.validate()
        data = config.load_data()
        study = Study.prepare(config.run_specs(data), data, config.sweep_options())
    out = prepare_output_dir(workdir or config.out or default_out_dir("weight_change"), resume=config.resume,
                             overwrite=config.overwrite)
    results = {"config": dataclasses.asdict(config), **environment(),
               "dataset": {"name": data.name, "train_images": len(data.train), "image_shape": list(data.image_shape)},
               "resumed_from_step": None, "runs": study.pending_entries(), "models": {}}
    stream = stream_results(results, out / RESULTS_FILE, resume=config.resume, announce=progress)
    records = train_models_rwc(config, data, checkpoint_dir=out / CHECKPOINT_DIR, progress=progress,
                               on_start=stream.on_start, on_update=stream.on_update, study=study)
    for model in config.models:
        runs = [r for r in records if r["model"] == model]
        mean = _mean_over_seeds(runs)
        layers = runs[0]["layers"]
        clusters = cluster_layers(mean, layers, max_k=config.max_k, drop_first_last=config.drop_first_last,
                                  outlier_std=config.outlier_std, seed=0) if len(layers) > 3 else None
        results["models"][model] = {
            "layers": layers, "learning_rate": runs[0]["learning_rate"], "weight_decay": runs[0]["weight_decay"],
            "mean_rwc": json_matrix(mean),
            "final_clean_accuracy": float(np.mean([r["clean_accuracy"][-1] or 0.0 for r in runs])),
            "runs": runs, "clusters": clusters}
    from anatomy_jax.plots.weight_change import plot_all

    results["figures"] = plot_all(results, out)
    write_json(out / RESULTS_FILE, results)
    return results


def format_summary(results: dict[str, Any]) -> str:
    """Per model: accuracy, mean RWC over all epochs of the early/middle/late third of the layers, elbow k."""
    lines = [f"{'model':>16} {'acc':>6} {'layers':>6} {'early':>8} {'middle':>8} {'late':>8} {'elbow k':>7}"]
    for name, m in results["models"].items():
        rwc = matrix_from_json(m["mean_rwc"])
        thirds = [np.nanmean(part) for part in np.array_split(rwc, 3)] if len(rwc) >= 3 else [np.nan] * 3
        k = m["clusters"]["k"] if m["clusters"] else "-"
        lines.append(f"{name:>16} {m['final_clean_accuracy']:>6.3f} {len(m['layers']):>6} "
                     + " ".join(f"{t:>8.4f}" for t in thirds) + f" {k:>7}")
    return "\n".join(lines)
