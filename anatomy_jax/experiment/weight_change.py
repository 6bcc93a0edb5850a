"""Relative weight change per layer over training, per layer group, and its clusters (seed 003).

Every model x seed trains in one study (`anatomy_jax.experiment.study`: the seeds of a model as
one sweep, models one after another) with constant-learning-rate SGD (momentum 0.9) at the
settings of the paper's supplementary Table 1 for the (model, dataset) pair (`TABLE1`); one
tracker per run records the RWC of every weight tensor once per epoch in both definitions
(layers in depth order), and the study's orbax checkpoints in `checkpoints/<step>/` hold the
states and RWC histories (`--resume` continues from them).

The papers' protocol, as options: `--paper-augmentation` (CIFAR: crop 4 + flip + ImageNet
normalisation; MNIST/Fashion-MNIST/digits: resized to 32x32 + flip), `--shuffle false` (the
authors' DataLoaders had no shuffle: every epoch visits the images in the same order),
`--stop-at-accuracy` (the authors stop at 0.94 test accuracy; here every run trains all epochs,
which is what a sweep of seeds shares, and its record ends at the epoch that first reached the
threshold, which is exactly what a stopped run records), and `--preset paper` (150 epochs, the
five seeds, that augmentation and the 0.94 stop for fields left at their defaults).

Per model, RWC is averaged over each layer group (`anatomy_jax.models.registry.layer_groups`: ResNet stem,
block1..4, classifier; VGG/AlexNet early/middle/late) and the seeds, the papers' claims are
checked against the group means over the epochs after the first, and the layers x epochs matrix
(mean over seeds) is clustered as WeightScale did, on the original matrix (`clusters`), on its
PCA reduction (`clusters_pca`) and, for models with layer types (EfficientNet), per type
(`clusters_by_type`). `run_weight_change(config, workdir)` runs what `experiments/weight_change.py`
runs.
"""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Any, ClassVar

import chex
import jax
import jax.numpy as jnp
import numpy as np

from anatomy_jax.data import Dataset
from anatomy_jax.dynamics import (MAX_K, MODES, SEED, RWCTracker, after_first, cluster_by_type, cluster_layers,
                                  depth_order, group_rwc, group_rwc_std, rwc_claims)
from anatomy_jax.experiment.options import DataOptions, DeviceOptions, OutputOptions, resumable_settings
from anatomy_jax.experiment.outputs import (CHECKPOINT_DIR, RESULTS_FILE, default_out_dir, environment,
                                            prepare_output_dir)
from anatomy_jax.experiment.study import Study, stream_results
from anatomy_jax.models import MODEL_NAMES, check_model_names
from anatomy_jax.models.registry import layer_groups, layer_types
from anatomy_jax.poison import PatternSpec, PoisonSpec
from anatomy_jax.poison.patterns import Patterns, stamp
from anatomy_jax.poison.poisoning import PoisonPlan
from anatomy_jax.train import RunSpec, TrainConfig, Trainer, TrainState
from anatomy_jax.train.evaluation import to_float
from anatomy_jax.data.augment import augment as augment_batch
from anatomy_jax.utils import flag, settings_errors
from anatomy_jax.utils.serialize import json_matrix, matrix_from_json, write_json

# Supplementary Table 1 of Agrawal et al. 2020 (arXiv 2011.06735): (model, dataset) -> (learning rate,
# momentum, weight decay); constant learning rate, batch 128.
PAPER_DATASETS = ("cifar10", "cifar100", "mnist", "fashion_mnist")
TABLE1: dict[tuple[str, str], tuple[float, float, float]] = {
    **{("resnet18", d): (0.1, 0.9, 1e-4) for d in PAPER_DATASETS},
    **{("vgg19", d): (0.05, 0.9, 5e-4) for d in PAPER_DATASETS},
    ("alexnet", "cifar10"): (0.001, 0.9, 1e-4),
    ("alexnet", "cifar100"): (0.01, 0.9, 1e-4),
    ("alexnet", "mnist"): (0.1, 0.9, 1e-4),
    ("alexnet", "fashion_mnist"): (0.1, 0.9, 1e-4),
}
DEFAULT_SETTING = (0.05, 0.9, 5e-4)  # models (and datasets) not in Table 1
TABLE1_DATASET = {"digits": "mnist"}  # digits uses the MNIST row
PAPER_SEEDS = (0, 42, 123, 1000, 1234)
PAPER_EPOCHS = 150
PAPER_STOP_ACCURACY = 0.94
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
GRAYSCALE_DATASETS = ("mnist", "fashion_mnist", "digits")  # resized to 32x32 by the paper's transform
NORMALISED_DATASETS = ("cifar10", "cifar100")  # ImageNet mean/std in the paper's transform
TYPE_CLUSTERS = ("depthwise", "pointwise", "pointwise_linear", "squeeze_excite")  # WeightScale's EfficientNet types
PRESETS = ("none", "paper")


def paper_setting(model: str, dataset: str) -> tuple[float, float, float]:
    """(learning rate, momentum, weight decay) of Table 1 for `model` on `dataset` (digits: the MNIST
    row; anything else not in the table: 0.05, 0.9, 5e-4)."""
    name = dataset.split(":", 1)[0]
    return TABLE1.get((model, TABLE1_DATASET.get(name, name)), DEFAULT_SETTING)


@dataclasses.dataclass(frozen=True)
class WeightChangeConfig(OutputOptions, DeviceOptions, DataOptions):
    """Settings of the weight-change study; defaults suit digits on 2 CPU cores (a few minutes)."""

    # the fields `--preset paper` sets when they are left at their defaults
    PAPER: ClassVar[dict[str, Any]] = {"epochs": PAPER_EPOCHS, "seeds": PAPER_SEEDS,
                                       "stop_at_accuracy": PAPER_STOP_ACCURACY, "paper_augmentation": True}

    models: tuple[str, ...] = flag(("cnn", "vgg11", "resnet18"), f"architectures: {', '.join(MODEL_NAMES)}")
    preset: str = flag("none", "none, or 'paper': the paper's epochs (150), seeds (0,42,123,1000,1234), "
                               "augmentation and stop at 0.94 test accuracy, for the fields left at their defaults "
                               "(add --width 1 for the paper's widths, --shuffle false for its unshuffled loaders)")
    width: float = flag(0.25, "channel width multiplier (reduced for CPU runs; 1 for the paper)")
    epochs: int = flag(20, "training epochs (RWC is recorded once per epoch)")
    batch_size: int = flag(128, "batch size")
    learning_rate: float | None = flag(None, "constant learning rate (auto: the paper's Table 1 per model and "
                                             "dataset, e.g. resnet18 0.1, vgg19 0.05, alexnet 0.001 on CIFAR-10 / "
                                             "0.01 on CIFAR-100 / 0.1 on MNIST; other models 0.05)")
    weight_decay: float | None = flag(None, "weight decay (auto: Table 1: resnet18 and alexnet 1e-4, vgg19 5e-4; "
                                            "other models 5e-4)")
    momentum: float = flag(0.9, "SGD momentum")
    augment: bool = flag(True, "random crop/flip where the dataset allows it")
    paper_augmentation: bool = flag(False, "the paper's transforms: CIFAR crop 4 + flip + ImageNet normalisation; "
                                           "MNIST/Fashion-MNIST/digits resized to 32x32 + flip (no crop)")
    shuffle: bool = flag(True, "reshuffle the training images every epoch (false: the same order every epoch, as "
                               "the authors' loaders)")
    stop_at_accuracy: float = flag(0.0, "end a run's record at the first epoch whose test accuracy reaches this "
                                        "(0 = off; the authors stop at 0.94)")
    dtype: str = flag("float32", "compute dtype: float32, or bfloat16 for mixed precision (parameters, optimizer "
                                 "state and logits stay float32; for GPU/TPU)")
    seeds: tuple[int, ...] = flag((0, 1), "seeds; RWC is averaged over them (the paper: 0,42,123,1000,1234)")
    mode: str = flag("l1_ratio", f"RWC definition the groups, claims and clusters use: {', '.join(MODES)} "
                                 "(both are recorded)")
    frequency: float = flag(0.0, "share of training images carrying a pattern (0 = clean data)")
    correlation: float = flag(1.0, "P(label = target | pattern) when frequency > 0")
    max_k: int = flag(MAX_K, "largest k tried by k-means (fewer when there are fewer layers)")
    drop_first_last: bool = flag(True, "drop the first and last layer before clustering (as WeightScale)")
    outlier_std: float = flag(2.0, "replace values beyond this many standard deviations by the layer mean (as "
                                   "WeightScale; this also replaces real epoch-1 peaks)")
    pca_dim: int = flag(2, "also cluster the layers reduced to this many principal components (clusters_pca; "
                           "0 = off)")
    cluster_seed: int = flag(SEED, "seed of k-means and PCA (the authors' numpy seed)")
    checkpoint_every: int = flag(5, "save an orbax checkpoint (state and RWC history) every this many epochs")

    def resolved(self) -> "WeightChangeConfig":
        """The config with its preset applied to the fields left at their defaults (idempotent)."""
        if self.preset not in PRESETS:
            raise ValueError(f"unknown preset {self.preset!r}; choose one of {', '.join(PRESETS)}")
        if self.preset == "none":
            return self
        defaults = {f.name: f.default for f in dataclasses.fields(self)}
        return dataclasses.replace(self, **{k: v for k, v in self.PAPER.items() if getattr(self, k) == defaults[k]})

    def validate(self) -> None:
        self.resolved()
        self.validate_data()
        self.validate_devices()
        self.validate_output()
        check_model_names(self.models)
        if self.mode not in MODES:
            raise ValueError(f"unknown RWC mode {self.mode!r}; choose one of {', '.join(MODES)}")
        if self.epochs < 2:
            raise ValueError(f"epochs must be >= 2, got {self.epochs}")
        if not self.seeds:
            raise ValueError("give at least one seed")
        if not 0.0 <= self.frequency <= 1.0 or not 0.0 <= self.correlation <= 1.0:
            raise ValueError("frequency and correlation must lie in [0, 1]")
        if not 0.0 <= self.stop_at_accuracy <= 1.0:
            raise ValueError(f"stop_at_accuracy must lie in [0, 1] (0 = off), got {self.stop_at_accuracy}")
        if self.max_k < 1 or self.outlier_std <= 0 or self.pca_dim < 0:
            raise ValueError(f"max_k must be >= 1, outlier_std > 0 and pca_dim >= 0; got {self.max_k}, "
                             f"{self.outlier_std}, {self.pca_dim}")
        if self.checkpoint_every < 1:
            raise ValueError(f"checkpoint_every must be >= 1 epoch, got {self.checkpoint_every}")
        for name in ("learning_rate", "weight_decay"):
            value = getattr(self, name)
            if value is not None and not (value >= 0 and np.isfinite(value)):
                raise ValueError(f"{name} must be a finite number >= 0, got {value}")

    def setting_of(self, model: str) -> tuple[float, float]:
        """(learning rate, weight decay) of `model`: the flags, else Table 1 for this dataset."""
        lr, _, wd = paper_setting(model, self.dataset)
        return (self.learning_rate if self.learning_rate is not None else lr,
                self.weight_decay if self.weight_decay is not None else wd)

    def learning_rate_of(self, model: str) -> float:
        return self.setting_of(model)[0]

    def training_config(self, model: str, steps_per_epoch: int) -> TrainConfig:
        """How `model` trains in this study (constant learning rate, evaluated once per epoch)."""
        return TrainConfig(model=model, width=self.width, momentum=self.momentum,
                           weight_decay=self.setting_of(model)[1],
                           augment=self.augment, dtype=self.dtype, steps=self.epochs * steps_per_epoch,
                           batch_size=self.batch_size,
                           eval_every=steps_per_epoch, checkpoint_every=steps_per_epoch * self.checkpoint_every,
                           keep_checkpoints=2)

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


# ---- the authors' data loading -------------------------------------------------------------------


def resize_images(images: np.ndarray, size: int = 32, chunk: int = 4096) -> np.ndarray:
    """uint8 (N, H, W, C) images resized (bilinear) to size x size, as uint8."""
    chex.assert_rank(images, 4)
    out = [np.asarray(jnp.clip(jnp.round(jax.image.resize(
        jnp.asarray(images[i:i + chunk], jnp.float32), (min(chunk, len(images) - i), size, size, images.shape[-1]),
        "bilinear")), 0, 255).astype(jnp.uint8)) for i in range(0, len(images), chunk)]
    return np.concatenate(out) if out else images[:, :size, :size]


def paper_data(data: Dataset) -> Dataset:
    """The paper's deterministic preprocessing: MNIST, Fashion-MNIST (and digits) resized to 32x32, and
    mirroring allowed (the paper flips them); other datasets unchanged."""
    if data.name not in GRAYSCALE_DATASETS:
        return data
    train = dataclasses.replace(data.train, images=resize_images(data.train.images))
    test = dataclasses.replace(data.test, images=resize_images(data.test.images))
    return dataclasses.replace(data, train=train, test=test, flip_ok=True)


def load_study_data(config: WeightChangeConfig) -> Dataset:
    """The config's dataset, with the paper's preprocessing when `paper_augmentation` is on."""
    data = config.load_data()
    return paper_data(data) if config.paper_augmentation else data


@dataclasses.dataclass(frozen=True, eq=False)
class RWCTrainer(Trainer):
    """`Trainer` with the authors' loading: `shuffle=False` visits the training images in the same
    order every epoch (0, 1, 2, ...; the last partial batch dropped) and `input_mean`/`input_std`
    normalise the [0, 1] inputs of every forward pass (training, evaluation)."""

    shuffle: bool = True
    input_mean: tuple[float, ...] | None = None
    input_std: tuple[float, ...] | None = None

    def apply(self, params, batch_stats, x: jax.Array, train: bool = False):
        if self.input_mean is not None:
            x = (x - jnp.asarray(self.input_mean, x.dtype)) / jnp.asarray(self.input_std, x.dtype)
        return super().apply(params, batch_stats, x, train)

    def train_batch(self, state: TrainState, images: jax.Array, plan: PoisonPlan, patterns: Patterns,
                    step: jax.Array | None = None) -> tuple[TrainState, jax.Array, jax.Array]:
        if self.shuffle:
            return super().train_batch(state, images, plan, patterns, step)
        step = state.step if step is None else step
        position = step % (images.shape[0] // self.batch_size)
        idx = position * self.batch_size + jnp.arange(self.batch_size)
        positions = self._positions()
        if self.data_axis is not None:
            idx = jax.lax.dynamic_slice_in_dim(idx, positions[0], positions.shape[0])
        x = stamp(to_float(images[idx]), plan.pattern_id[idx], plan.offsets[idx], patterns)
        if self.crop_padding or self.flip:
            key = jax.random.fold_in(jax.random.fold_in(jax.random.wrap_key_data(state.rng), 1), step)
            x = augment_batch(key, x, crop_padding=self.crop_padding, flip=self.flip, indices=positions)
        return state, x, plan.labels[idx]


def rwc_trainer(trainer: Trainer, config: WeightChangeConfig, data: Dataset) -> RWCTrainer:
    """`trainer` with the study's data order and, with `paper_augmentation`, the paper's transforms."""
    fields = {f.name: getattr(trainer, f.name) for f in dataclasses.fields(Trainer)}
    extra: dict[str, Any] = {"shuffle": config.shuffle}
    if config.paper_augmentation and data.name in GRAYSCALE_DATASETS:
        extra.update(crop_padding=0, flip=config.augment)  # resize + flip, no crop
    elif config.paper_augmentation and data.name in NORMALISED_DATASETS:
        extra.update(input_mean=IMAGENET_MEAN, input_std=IMAGENET_STD)
    return RWCTrainer(**{**fields, **extra})


def prepare_study(config: WeightChangeConfig, data: Dataset, models: tuple[str, ...] | None = None) -> Study:
    """The study of `config` on (preprocessed) `data`, its trainers replaced by `RWCTrainer`s."""
    with settings_errors():
        study = Study.prepare(config.run_specs(data, models), data, config.sweep_options())
    study.trainers = {key: rwc_trainer(t, config, data) for key, t in study.trainers.items()}
    return study


# ---- training and per-run records ----------------------------------------------------------------


class _ModesTracker:
    """One RWC tracker per definition, fed by the same observations (records: {mode: records})."""

    def __init__(self, trackers: dict[str, RWCTracker]):
        self.trackers = trackers

    def __call__(self, step: int, state: Any, metrics: dict) -> None:
        params = jax.device_get(state.params)
        for tracker in self.trackers.values():
            tracker(step, state._replace(params=params), metrics)

    def records(self) -> dict[str, list]:
        return {mode: t.records() for mode, t in self.trackers.items()}


def _tracking(trainer, specs, prepared, params, restored):
    if restored is None:
        return [_ModesTracker({m: RWCTracker(m, initial_params=p) for m in MODES}) for p in params]
    return [_ModesTracker({m: RWCTracker.restore(m, records[m], p) for m in MODES})
            for records, p in zip(restored, params)]


def stop_epoch(accuracy: list, threshold: float) -> int | None:
    """The first epoch (1-based) whose test accuracy reaches `threshold` (None: never, or threshold 0)."""
    if threshold <= 0:
        return None
    return next((i + 1 for i, a in enumerate(accuracy) if a is not None and a >= threshold), None)


def _summarise(config: WeightChangeConfig, layer_names: dict[str, tuple[str, ...]]):
    """The results entry of one run: per-epoch RWC in both definitions (layers in depth order, up to
    the stop epoch) and the accuracy curve."""

    def summarise(spec: RunSpec, history: dict, stats: list, tracked: Any) -> dict[str, Any]:
        accuracy = history["clean_accuracy"]
        stop = stop_epoch(accuracy, config.stop_at_accuracy)
        by_mode, order = {}, []
        for mode in MODES:
            layers, matrix = RWCTracker.restore(mode, (tracked or {}).get(mode, []), None).matrix()
            order = depth_order(layers, layer_names[spec.config.model])
            matrix = matrix[[layers.index(name) for name in order]] if layers else matrix
            by_mode[mode] = json_matrix(matrix[:, :stop])
        epochs = len(by_mode[config.mode][0]) if order else 0
        asr = history.get("attack_success_rate")
        recorded = [a for a in accuracy[:stop] if a is not None]
        return {"model": spec.config.model, "seed": spec.seed, "learning_rate": spec.learning_rate,
                "weight_decay": spec.config.weight_decay, "layers": order, "rwc": by_mode[config.mode],
                "rwc_by_mode": by_mode, "epochs": list(range(1, epochs + 1)), "stop_epoch": stop,
                "clean_accuracy": accuracy, "final_clean_accuracy": recorded[-1] if recorded else None,
                "attack_success_rate": [None if a is None else a[0] for a in asr] if asr else None,
                "diverged": history["diverged"]}

    return summarise


def train_models_rwc(config: WeightChangeConfig, data: Dataset, models: tuple[str, ...] | None = None,
                     checkpoint_dir: str | pathlib.Path | None = None, progress: bool = False,
                     on_start=None, on_update=None, study: Study | None = None) -> list[dict[str, Any]]:
    """Trains every model x seed (one RWC tracker per run) on `data` (already preprocessed: see
    `load_study_data`); returns one record per run: per-epoch RWC (layers in depth order), accuracy
    curve, learning rate. With `checkpoint_dir`, the study checkpoints there and `config.resume`
    continues from it."""
    config = config.resolved()
    study = study or prepare_study(config, data, models)
    layer_names = {c.model: t.model.layer_names for c, t in study.trainers.items()}
    outcome = study.run(checkpoint_dir, settings=resumable_settings(config), resume=config.resume,
                        summarise=_summarise(config, layer_names), keep_checkpoints=2,
                        tracking=_tracking, on_start=on_start, on_update=on_update,
                        progress=progress, desc="weight_change")
    return outcome.entries


def train_model_rwc(config: WeightChangeConfig, data: Dataset, model: str) -> list[dict[str, Any]]:
    """The records of one model's seeds (no checkpoints)."""
    return train_models_rwc(config, data, (model,))


# ---- aggregation -------------------------------------------------------------------------------


def stack_runs_rwc(runs: list[dict], mode: str | None = None) -> np.ndarray:
    """(seeds, layers, epochs) RWC of a model's runs (NaN after a run's stop epoch)."""
    mats = [matrix_from_json(r["rwc"] if mode is None else r["rwc_by_mode"][mode]) for r in runs]
    epochs = max(m.shape[1] for m in mats)
    return np.stack([np.pad(m, ((0, 0), (0, epochs - m.shape[1])), constant_values=np.nan) for m in mats])


def _curves(curves: dict[str, np.ndarray]) -> dict[str, list]:
    return {g: json_matrix(np.atleast_2d(c))[0] for g, c in curves.items()}


def _scalars(values: dict[str, np.ndarray]) -> dict[str, float | None]:
    return {g: (float(v) if np.isfinite(v) else None) for g, v in values.items()}


def summarise_model(config: WeightChangeConfig, runs: list[dict], groups: list[str],
                    types: list[str] | None, dataset: str) -> dict[str, Any]:
    """The results entry of one model: groups, per-group curves and means, claims, clusters."""
    rwc = stack_runs_rwc(runs)
    chex.assert_rank(rwc, 3)
    layers = runs[0]["layers"]
    finite = np.where(np.isfinite(rwc), rwc, np.nan)
    recorded_by_any = ~np.all(np.isnan(finite), axis=0)  # (layers, epochs) with a value in some seed
    mean = np.full(rwc.shape[1:], np.nan)
    mean[recorded_by_any] = np.nanmean(finite[:, recorded_by_any], axis=0)
    recorded = ~np.all(np.isnan(mean), axis=0)  # epochs some seed recorded (before every run stopped)
    cluster_matrix = mean[:, recorded]
    options = dict(max_k=config.max_k, outlier_std=config.outlier_std, seed=config.cluster_seed)
    enough = len(layers) - 2 * config.drop_first_last >= 2 and cluster_matrix.shape[1] >= 1
    clusters = cluster_layers(cluster_matrix, layers, drop_first_last=config.drop_first_last, **options) \
        if enough else None
    clusters_pca = cluster_layers(cluster_matrix, layers, drop_first_last=config.drop_first_last,
                                  pca_dim=config.pca_dim, **options) if enough and config.pca_dim else None
    by_type = cluster_by_type(cluster_matrix, layers, types, TYPE_CLUSTERS, pca_dim=config.pca_dim or None,
                              **options) if types is not None and cluster_matrix.shape[1] >= 1 else None
    finals = [r["final_clean_accuracy"] for r in runs if r["final_clean_accuracy"] is not None]
    return {
        "layers": layers, "groups": groups, "layer_types": types,
        "learning_rate": runs[0]["learning_rate"], "weight_decay": runs[0]["weight_decay"],
        "mean_rwc": json_matrix(mean),
        "group_rwc": _curves(group_rwc(rwc, groups)), "group_rwc_std": _curves(group_rwc_std(rwc, groups)),
        "group_mean_rwc": _scalars(after_first(group_rwc(rwc, groups))),
        "group_mean_rwc_by_mode": {m: _scalars(after_first(group_rwc(stack_runs_rwc(runs, m), groups)))
                                   for m in MODES},
        "claims": rwc_claims(rwc, groups, dataset),
        "stop_epochs": [r["stop_epoch"] for r in runs],
        "final_clean_accuracy": float(np.mean(finals)) if finals else None,
        "runs": runs, "clusters": clusters, "clusters_pca": clusters_pca, "clusters_by_type": by_type}


def run_weight_change(config: WeightChangeConfig, workdir: str | pathlib.Path | None = None, *,
                      progress: bool = True) -> dict[str, Any]:
    """Trains every model x seed, aggregates per group, checks the claims, clusters, writes
    results.json and the figures."""
    with settings_errors():  # every check that can fail runs before --out is touched
        config = config.resolved()
        config.validate()
        data = load_study_data(config)
    study = prepare_study(config, data)
    out = prepare_output_dir(workdir or config.out or default_out_dir("weight_change"), resume=config.resume,
                             overwrite=config.overwrite)
    results = {"config": dataclasses.asdict(config), **environment(),
               "dataset": {"name": data.name, "train_images": len(data.train), "image_shape": list(data.image_shape)},
               "resumed_from_step": None, "runs": study.pending_entries(), "models": {}}
    stream = stream_results(results, out / RESULTS_FILE, resume=config.resume, announce=progress)
    records = train_models_rwc(config, data, checkpoint_dir=out / CHECKPOINT_DIR, progress=progress,
                               on_start=stream.on_start, on_update=stream.on_update, study=study)
    models = {c.model: t.model for c, t in study.trainers.items()}
    for model in config.models:
        runs = [r for r in records if r["model"] == model]
        layers = runs[0]["layers"]
        results["models"][model] = summarise_model(config, runs, layer_groups(models[model], layers),
                                                   layer_types(models[model], layers), data.name)
    from anatomy_jax.plots.weight_change import plot_all

    results["figures"] = plot_all(results, out)
    write_json(out / RESULTS_FILE, results)
    return results


def _fmt(v: float | None, width: int = 8) -> str:
    return f"{'-':>{width}}" if v is None else f"{v:>{width}.4g}"


def format_summary(results: dict[str, Any]) -> str:
    """Per model: settings, accuracy, per-group mean RWC over the epochs after the first, elbow k (original
    / PCA), then the papers' claims against the measured group means."""
    cfg = results["config"]
    lines = [f"RWC ({cfg['mode']}) per layer group, mean over the epochs after the first and "
             f"{len(cfg['seeds'])} seed(s); dataset {results['dataset']['name']}"]
    for name, m in results["models"].items():
        k = m["clusters"]["k"] if m["clusters"] else "-"
        kp = m["clusters_pca"]["k"] if m.get("clusters_pca") else "-"
        stops = [s for s in m["stop_epochs"] if s is not None]
        acc = m["final_clean_accuracy"]
        lines.append(f"\n{name}: lr {m['learning_rate']:g}, wd {m['weight_decay']:g}, test accuracy "
                     f"{'-' if acc is None else f'{acc:.3f}'}, {len(m['layers'])} layers, elbow k {k} "
                     f"(PCA: {kp})" + (f", stopped at epochs {stops}" if stops else ""))
        lines.append("  " + "  ".join(f"{g} {_fmt(v, 0)}" for g, v in m["group_mean_rwc"].items()))
        if m.get("clusters_by_type"):
            lines.append("  per-type elbow k: " + ", ".join(f"{t} {c['k']}" for t, c in m["clusters_by_type"].items()))
        for c in m["claims"]:
            verdict = {True: "holds", False: "FAILS", None: "n/a"}[c["holds"]]
            values = ", ".join(f"{g} {_fmt(v, 0)}" for g, v in c["values"].items())
            detail = c["reason"] if "reason" in c else f"{values}; {c['seeds_holding']}/{c['seeds']} seeds"
            lines.append(f"  paper: {c['claim']:<40} {verdict:>5} ({detail})")
    return "\n".join(lines)
