"""Relative weight change per layer over training, and its clusters (seed 003).

For each model, its seeds train together as one sweep (`anatomy_jax.train.sweep`) with
constant-learning-rate SGD (momentum 0.9); one RWC tracker per run records the RWC of every
weight tensor once per epoch (layers in depth order), and orbax checkpoints under
`checkpoints/<model>/<step>/` hold the states and RWC histories (`--resume` continues from them).
RWC is averaged over seeds, then the layers x epochs matrix is cleaned and clustered
(WeightScale). Optionally on poisoned data (`frequency` > 0) to compare clean and poisoned
dynamics. `run_weight_change(config, workdir)` runs what
`experiments/weight_change.py` runs.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
from typing import Any

import numpy as np
import orbax.checkpoint as ocp

from anatomy_jax.data import DATASET_NAMES, Dataset
from anatomy_jax.dynamics import MODES, RWCTracker, cluster_layers, depth_order
from anatomy_jax.experiment.outputs import (CHECKPOINT_DIR, RESULTS_FILE, default_out_dir, environment,
                                            json_matrix, matrix_from_json, prepare_output_dir, write_json)
from anatomy_jax.experiment.pattern_rate import PatternRateConfig, flag, load_study_data
from anatomy_jax.experiment.seeds import train_seeds
from anatomy_jax.models import MODEL_NAMES, check_model_names
from anatomy_jax.train import STRATEGIES, checkpoint_manager, per_run

# The paper's constant learning rates and weight decays (Agrawal et al. 2020; SGD, momentum 0.9).
# AlexNet's is not in the text available here: 0.01 / 5e-4 is an inferred choice.
PAPER_SETTINGS = {"resnet18": (0.1, 1e-4), "vgg19": (0.05, 5e-4), "alexnet": (0.01, 5e-4)}
DEFAULT_SETTINGS = (0.05, 5e-4)


@dataclasses.dataclass(frozen=True)
class WeightChangeConfig:
    """Settings of the weight-change study; defaults suit digits on 2 CPU cores (a few minutes)."""

    dataset: str = flag("digits", f"dataset: {', '.join(DATASET_NAMES)} or npz:PATH")
    data_dir: str | None = flag(None, "tfds data directory holding prepared datasets")
    train_size: int = flag(0, "use only this many training images (0 = all)")
    models: tuple[str, ...] = flag(("cnn", "vgg11", "resnet18"), f"architectures: {', '.join(MODEL_NAMES)}")
    width: float = flag(0.25, "channel width multiplier (reduced for CPU runs; 1 for the paper)")
    epochs: int = flag(20, "training epochs (RWC is recorded once per epoch)")
    batch_size: int = flag(128, "batch size")
    learning_rate: float | None = flag(None, "constant learning rate (auto: the paper's per model, "
                                             "resnet18 0.1, vgg19 0.05, alexnet 0.01; else 0.05)")
    weight_decay: float | None = flag(None, "weight decay (auto: resnet18 1e-4, else 5e-4)")
    momentum: float = flag(0.9, "SGD momentum")
    augment: bool = flag(True, "random crop/flip where the dataset allows it")
    seeds: tuple[int, ...] = flag((0, 1), "seeds; RWC is averaged over them")
    mode: str = flag("l1_ratio", f"RWC definition: {', '.join(MODES)}")
    frequency: float = flag(0.0, "share of training images carrying a pattern (0 = clean data)")
    correlation: float = flag(1.0, "P(label = target | pattern) when frequency > 0")
    max_k: int = flag(10, "largest k tried by k-means")
    drop_first_last: bool = flag(False, "drop the first and last layer before clustering")
    outlier_std: float = flag(2.0, "replace values beyond this many standard deviations by the layer mean")
    strategy: str = flag("auto", "how the seeds of a model train together: vmap, loop or auto (loop on CPU, "
                                 "vmap on GPU/TPU)")
    checkpoint_every: int = flag(5, "save an orbax checkpoint (state and RWC history) every this many epochs")
    out: str | None = flag(None, "output directory (default: runs/weight_change/<timestamp>)")
    resume: bool = flag(False, "continue the study in --out from its checkpoints")
    overwrite: bool = flag(False, "replace the results in --out")

    def validate(self) -> None:
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
        if self.strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {self.strategy!r}; choose one of {', '.join(STRATEGIES)}")
        if self.resume and self.overwrite:
            raise ValueError("choose one of --resume and --overwrite, not both")

    def training_config(self, model: str, steps: int, steps_per_epoch: int) -> PatternRateConfig:
        """The pattern-rate settings that train `model` for this study (one run, constant LR)."""
        lr, wd = PAPER_SETTINGS.get(model, DEFAULT_SETTINGS)
        return PatternRateConfig(
            dataset=self.dataset, data_dir=self.data_dir, train_size=self.train_size, model=model, width=self.width,
            frequencies=(self.frequency,), correlations=(self.correlation,),
            learning_rates=(self.learning_rate if self.learning_rate is not None else lr,),
            weight_decay=self.weight_decay if self.weight_decay is not None else wd, momentum=self.momentum,
            augment=self.augment, steps=steps, batch_size=self.batch_size, eval_every=steps_per_epoch,
            seeds=self.seeds)


def _settings(config: WeightChangeConfig) -> dict[str, Any]:
    """What a resumed study must share with the one it continues (JSON-normalised)."""
    settings = dataclasses.asdict(config)
    for key in ("out", "resume", "overwrite", "strategy"):
        settings.pop(key)
    return json.loads(json.dumps(settings))


def train_model_rwc(config: WeightChangeConfig, data: Dataset, model: str,
                    manager: ocp.CheckpointManager | None = None, progress: bool = False) -> list[dict[str, Any]]:
    """Trains one model with every seed as one sweep (one RWC tracker per run); returns one record
    per seed: per-epoch RWC (layers in depth order), accuracy curve, learning rate.

    With a checkpoint `manager`, the sweep and its RWC histories are saved every
    `checkpoint_every` epochs and at the end, and training continues from the newest checkpoint.
    """
    steps_per_epoch = len(data.train) // config.batch_size
    if steps_per_epoch < 1:
        raise ValueError(f"batch size {config.batch_size} exceeds the {len(data.train)} training images")
    train_config = config.training_config(model, config.epochs * steps_per_epoch, steps_per_epoch)
    trackers: list[RWCTracker] = []

    def tracking(params, restored):
        if restored is None:
            trackers[:] = [RWCTracker(config.mode, initial_params=p) for p in params]
        else:  # continue each run's history from the checkpointed parameters
            trackers[:] = [RWCTracker.restore(config.mode, records, p) for records, p in zip(restored["rwc"], params)]
        return [per_run(trackers)], lambda: {"rwc": [t.records() for t in trackers]}

    trained = train_seeds(train_config, data, settings=_settings(config), strategy=config.strategy, manager=manager,
                          checkpoint_every=steps_per_epoch * config.checkpoint_every, tracking=tracking,
                          progress=progress, desc=f"weight_change {model}")
    trainer, grid, histories, strategy = trained.trainer, trained.runs, trained.histories, trained.strategy
    records = []
    for run, tracker, history in zip(grid, trackers, histories):
        layers, matrix = tracker.matrix()
        order = depth_order(layers, trainer.model.layer_names)
        matrix = matrix[[layers.index(name) for name in order]]
        records.append({
            "model": model, "seed": run["seed"], "learning_rate": run["learning_rate"],
            "weight_decay": train_config.weight_decay, "layers": order,
            "rwc": json_matrix(matrix),
            "epochs": list(range(1, matrix.shape[1] + 1)), "clean_accuracy": history["clean_accuracy"],
            "attack_success_rate": [a[0] for a in history["attack_success_rate"]], "diverged": history["diverged"],
            "strategy": strategy})
    return records


def _mean_over_seeds(records: list[dict]) -> np.ndarray:
    stack = np.stack([matrix_from_json(r["rwc"]) for r in records])
    with np.errstate(all="ignore"):
        return np.nanmean(stack, axis=0)


def run_weight_change(config: WeightChangeConfig, workdir: str | pathlib.Path | None = None, *,
                      progress: bool = True) -> dict[str, Any]:
    """Trains every model x seed, aggregates and clusters, writes results.json and the figures."""
    config.validate()
    probe = config.training_config(config.models[0], 1, 1)
    probe.validate()
    data = load_study_data(probe)
    out = prepare_output_dir(workdir or config.out or default_out_dir("weight_change"), resume=config.resume,
                             overwrite=config.overwrite)
    results = {"config": dataclasses.asdict(config), **environment(),
               "dataset": {"name": data.name, "train_images": len(data.train), "image_shape": list(data.image_shape)},
               "models": {}}
    for model in config.models:
        manager = checkpoint_manager(out / CHECKPOINT_DIR / model, max_to_keep=2)
        records = train_model_rwc(config, data, model, manager, progress)
        manager.close()
        mean = _mean_over_seeds(records)
        layers = records[0]["layers"]
        clusters = cluster_layers(mean, layers, max_k=config.max_k, drop_first_last=config.drop_first_last,
                                  outlier_std=config.outlier_std, seed=0) if len(layers) > 3 else None
        results["models"][model] = {
            "layers": layers, "learning_rate": records[0]["learning_rate"],
            "weight_decay": records[0]["weight_decay"],
            "mean_rwc": json_matrix(mean),
            "final_clean_accuracy": float(np.mean([r["clean_accuracy"][-1] or 0.0 for r in records])),
            "runs": records, "clusters": clusters}
        write_json(out / RESULTS_FILE, results)
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
