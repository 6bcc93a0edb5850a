"""The pattern-rate study (seed 000): how fast and how strongly a net acquires a planted pattern,
as a function of the pattern's frequency, its correlation with the target label and the learning
rate. `train_and_evaluate(config, workdir)` runs the whole grid, for notebooks and the CLI alike.

Keys: each seed s gives the initialisation and the data order (`jax.random.key(s)`, split in
two); the poison selection comes from `poison_seed` (default: s), so `--poison-seed` holds the
poisoned set fixed across initialisations. One orbax CheckpointManager per output directory
numbers checkpoints by global step (run index x steps + step), so `<out>/checkpoints/<step>/`
covers the whole grid and `resume=True` continues mid-run with identical results.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import pathlib
import sys
import time
from typing import Any, Sequence

import jax
import jax.numpy as jnp
from tqdm.auto import tqdm

from anatomy_jax.data import DATASET_NAMES, Dataset, load_dataset, subset
from anatomy_jax.models import MODEL_NAMES, create_model
from anatomy_jax.poison import LOCATIONS, PATTERN_KINDS, PatternSpec, PoisonSpec, make_patterns, plan_poison
from anatomy_jax.experiment.outputs import (CHECKPOINT_DIR, RESULTS_FILE, default_out_dir, environment,
                                            prepare_output_dir, write_json)
from anatomy_jax.train import (OPTIMIZERS, SCHEDULES, Observer, RunData, Trainer, acquisition_step,
                               checkpoint_manager, latest_meta, make_optimizer, restore_latest, save, train_loop)


def flag(default: Any, text: str) -> Any:
    """A config field with a default and the help text `--help` shows."""
    return dataclasses.field(default=default, metadata={"help": text})


@dataclasses.dataclass(frozen=True)
class PatternRateConfig:
    """Everything the pattern-rate study needs; defaults suit the offline digits run (~2 min, 2 CPUs)."""

    dataset: str = flag("digits", f"dataset: {', '.join(DATASET_NAMES)} (tfds), or npz:PATH with arrays x, y "
                                  "[, x_test, y_test]")
    data_dir: str | None = flag(None, "tfds data directory holding prepared datasets (default: tfds's own)")
    train_size: int = flag(0, "use only this many training images (fixed seeded subset; 0 = all)")
    model: str = flag("cnn", f"architecture: {', '.join(MODEL_NAMES)}")
    width: float = flag(1.0, "channel width multiplier of the model")
    pattern: str = flag("checkerboard", f"pattern kind: {', '.join(PATTERN_KINDS)}")
    patch_size: int | None = flag(None, "side of the square patch in pixels (auto: 2 below 16 px, else 3)")
    location: str = flag("bottom-right", f"patch location: {', '.join(LOCATIONS)}")
    alpha: float | None = flag(None, "pattern opacity/amplitude in (0, 1] (auto: 1 for patches, 0.2 blend, "
                                     "0.1 noise)")
    clean_label: bool = flag(False, "clean-label poisoning: stamp target-class images only, change no label")
    target: int = flag(0, "target class of the pattern")
    frequencies: tuple[float, ...] = flag((0.01, 0.03, 0.1), "pattern frequencies f: share of training images "
                                                            "that carry the pattern")
    correlations: tuple[float, ...] = flag((0.0, 0.5, 1.0), "correlations c = P(label = target | pattern)")
    learning_rates: tuple[float, ...] = flag((0.01, 0.1), "base learning rates")
    optimizer: str = flag("sgd", f"optimizer: {', '.join(OPTIMIZERS)} (sgd uses --momentum)")
    momentum: float = flag(0.9, "SGD momentum")
    nesterov: bool = flag(False, "use Nesterov momentum")
    schedule: str = flag("constant", f"learning-rate schedule: {', '.join(SCHEDULES)}")
    warmup_steps: int = flag(0, "linear warm-up steps before the schedule")
    weight_decay: float = flag(5e-4, "weight decay (L2 for SGD, decoupled for Adam)")
    label_smoothing: float = flag(0.0, "label smoothing of the cross entropy")
    augment: bool = flag(True, "random crop (pad 4 on images >= 32 px) and flip where the dataset allows it")
    seeds: tuple[int, ...] = flag((0,), "seeds: initialisation and data order")
    poison_seed: int | None = flag(None, "seed of the poison selection (default: each run's seed)")
    steps: int = flag(400, "training steps per run")
    batch_size: int = flag(128, "batch size")
    eval_every: int | None = flag(None, "evaluate on the test set every this many steps (auto: steps / 16, "
                                        "i.e. 16 points per curve)")
    checkpoint_every: int = flag(100, "save an orbax checkpoint every this many steps (and at each run's end)")
    keep_checkpoints: int = flag(3, "how many checkpoints to keep")
    acquisition_threshold: float = flag(0.5, "ASR that counts as acquired")
    out: str | None = flag(None, "output directory (default: runs/pattern_rate/<timestamp>)")
    resume: bool = flag(False, "continue the run in --out from its latest checkpoint")
    overwrite: bool = flag(False, "replace the results in --out")

    def validate(self) -> None:
        """Raises ValueError naming the first bad value (dataset-dependent checks come later)."""
        if self.dataset not in DATASET_NAMES and not self.dataset.startswith("npz:"):
            raise ValueError(f"unknown dataset {self.dataset!r}; choose one of {', '.join(DATASET_NAMES)} or npz:PATH")
        if self.model not in MODEL_NAMES:
            raise ValueError(f"unknown model {self.model!r}; choose one of {', '.join(MODEL_NAMES)}")
        for name, values in (("frequencies", self.frequencies), ("correlations", self.correlations)):
            bad = [v for v in values if not 0.0 <= v <= 1.0]
            if bad:
                raise ValueError(f"{name} must lie in [0, 1], got {bad}")
        if any(not (lr > 0 and math.isfinite(lr)) for lr in self.learning_rates):
            raise ValueError(f"learning rates must be positive, got {list(self.learning_rates)}")
        if self.eval_every is not None and self.eval_every <= 0:
            raise ValueError(f"eval_every must be > 0, got {self.eval_every}")
        for name in ("steps", "batch_size", "keep_checkpoints"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.checkpoint_every < 0 or self.train_size < 0:
            raise ValueError("checkpoint_every and train_size must be >= 0")
        if not 0.0 < self.acquisition_threshold <= 1.0:
            raise ValueError(f"acquisition_threshold must be in (0, 1], got {self.acquisition_threshold}")
        if not self.width > 0:
            raise ValueError(f"width must be > 0, got {self.width}")
        if self.resume and self.overwrite:
            raise ValueError("choose one of --resume and --overwrite, not both")
        make_optimizer(self.optimizer, total_steps=self.steps, schedule=self.schedule, warmup_steps=self.warmup_steps,
                       momentum=self.momentum, weight_decay=self.weight_decay)

    @property
    def eval_interval(self) -> int:
        """`eval_every`, or steps / 16 (at least 1) when it is left on auto."""
        return self.eval_every if self.eval_every is not None else max(1, round(self.steps / 16))

    def pattern_spec(self, image_shape: tuple[int, int, int]) -> PatternSpec:
        size = self.patch_size if self.patch_size is not None else (2 if min(image_shape[:2]) < 16 else 3)
        return PatternSpec(self.pattern, size, self.location, self.alpha)

    def grid(self) -> list[dict[str, Any]]:
        """The runs, in order: learning rate x frequency x correlation x seed."""
        return [{"learning_rate": lr, "frequency": f, "correlation": c, "seed": s}
                for lr, f, c, s in itertools.product(self.learning_rates, self.frequencies, self.correlations,
                                                     self.seeds)]


def load_study_data(config: PatternRateConfig) -> Dataset:
    """The dataset, subsampled to `train_size`, with the target class checked."""
    data = load_dataset(config.dataset, data_dir=config.data_dir, download=config.data_dir is None)
    if config.train_size:
        data = dataclasses.replace(data, train=subset(data.train, config.train_size))
    if not 0 <= config.target < data.num_classes:
        raise ValueError(f"target class {config.target} does not exist: {data.name} has classes "
                         f"0..{data.num_classes - 1}")
    if config.batch_size > len(data.train):
        raise ValueError(f"batch size {config.batch_size} exceeds the {len(data.train)} training images")
    return data


def make_trainer(config: PatternRateConfig, data: Dataset) -> Trainer:
    """The model, optimizer and augmentation shared by every run of the grid."""
    model = create_model(config.model, data.num_classes, width=config.width)
    tx = make_optimizer(config.optimizer, total_steps=config.steps, schedule=config.schedule,
                        warmup_steps=config.warmup_steps, momentum=config.momentum, nesterov=config.nesterov,
                        weight_decay=config.weight_decay)
    big = min(data.image_shape[:2]) >= 32
    return Trainer(model, tx, batch_size=config.batch_size, crop_padding=4 if (config.augment and big) else 0,
                   flip=config.augment and data.flip_ok, label_smoothing=config.label_smoothing)


def run_keys(config: PatternRateConfig, seed: int) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(init key, data-order key, poison key) of a run."""
    init_key, data_key = jax.random.split(jax.random.key(seed))
    poison_seed = seed if config.poison_seed is None else config.poison_seed
    return init_key, data_key, jax.random.fold_in(jax.random.key(poison_seed), 0x9015)


def prepare_run(config: PatternRateConfig, trainer: Trainer, data: Dataset, train_images: jax.Array,
                run: dict[str, Any]) -> tuple[RunData, list[dict], Any]:
    """The device data of one run, its realised poison statistics and its initial state."""
    spec = PoisonSpec(config.pattern_spec(data.image_shape), config.target, run["frequency"], run["correlation"],
                      config.clean_label)
    init_key, data_key, poison_key = run_keys(config, run["seed"])
    plan, stats = plan_poison(poison_key, data.train.labels, [spec], data.num_classes, data.image_shape)
    patterns = make_patterns([spec.pattern], data.image_shape)
    eval_data = trainer.eval_data(data.test.images, data.test.labels, patterns, jax.random.fold_in(poison_key, 1))
    run_data = RunData(train_images, plan, patterns, eval_data, jnp.asarray([config.target], jnp.int32))
    stats[0].update(name=spec.pattern.name, target=config.target, frequency=run["frequency"],
                    correlation=1.0 if config.clean_label else run["correlation"])
    state = trainer.init(init_key, data_key, train_images, run["learning_rate"])
    return run_data, stats, state


def summarise_run(run: dict[str, Any], history: dict, stats: list[dict], threshold: float) -> dict[str, Any]:
    """One entry of results.json["runs"] (top-level curves are those of the first pattern)."""
    steps = history["steps"]
    patterns = []
    for k, st in enumerate(stats):
        asr = [a[k] for a in history["attack_success_rate"]]
        patterns.append({**st, "attack_success_rate": asr, "reliance": [r[k] for r in history["reliance"]],
                         "acquisition_step": acquisition_step(asr, steps, threshold),
                         "acquisition_step_90": acquisition_step(asr, steps, max(threshold, 0.9))})
    first = patterns[0]
    return {
        **run,
        "pattern": first["name"],
        "target": first["target"],
        "steps": steps,
        "train_loss": history["train_loss"],
        "test_loss": history["test_loss"],
        "clean_accuracy": history["clean_accuracy"],
        "attack_success_rate": first["attack_success_rate"],
        "reliance": first["reliance"],
        "acquisition_step": first["acquisition_step"],
        "final_clean_accuracy": history["clean_accuracy"][-1] if steps else None,
        "final_attack_success_rate": first["attack_success_rate"][-1] if steps else None,
        "diverged": history["diverged"],
        "diverged_at_step": history["diverged_at_step"],
        "patterns": patterns,
    }


def train_and_evaluate(config: PatternRateConfig, workdir: str | pathlib.Path | None = None, *,
                       observers: Sequence[Observer] = (), progress: bool = True) -> dict[str, Any]:
    """Runs the grid into `workdir` (default `config.out`), writing results.json after every run.

    Returns the results dict. Raises ValueError for bad settings and OutputExistsError when the
    directory holds results and neither `config.resume` nor `config.overwrite` is set.
    """
    config.validate()
    out = pathlib.Path(workdir or config.out or default_out_dir("pattern_rate"))
    data = load_study_data(config)
    config.pattern_spec(data.image_shape).validate(data.image_shape)
    out = prepare_output_dir(out, resume=config.resume, overwrite=config.overwrite)
    trainer = make_trainer(config, data)
    train_images = jnp.asarray(data.train.images)
    manager = checkpoint_manager(out / CHECKPOINT_DIR, config.keep_checkpoints)
    grid = config.grid()
    results = {"config": dataclasses.asdict(config), **environment(), "resumed_from_step": None,
               "dataset": {"name": data.name, "train_images": len(data.train), "test_images": len(data.test),
                           "image_shape": list(data.image_shape), "num_classes": data.num_classes},
               "runs": []}
    start_run, resume_state = 0, None
    if config.resume and manager.latest_step() is not None:
        start_run, resume_state = _resume_point(config, trainer, data, train_images, manager, results)
    elif config.resume:
        print(f"note: nothing to resume in {out}; starting from scratch", file=sys.stderr)
    bar = tqdm(total=len(grid) * config.steps, initial=start_run * config.steps + (
        int(resume_state[0].step) if resume_state else 0), desc="pattern_rate", unit="step", disable=not progress)
    for index in range(start_run, len(grid)):
        run = grid[index]
        run_data, stats, state = prepare_run(config, trainer, data, train_images, run)
        history = None
        if resume_state is not None:
            state, history = resume_state
            resume_state = None
        bar.set_postfix(lr=run["learning_rate"], f=run["frequency"], c=run["correlation"], seed=run["seed"])
        started = time.time()

        def progress_meta(history, finished, index=index):
            return {"run_index": index, "run_finished": finished, "history": history, "runs": results["runs"],
                    "config": _resumable_settings(config)}

        def checkpoint(state, history, index=index):
            save(manager, index * config.steps + int(state.step), state, progress_meta(history, False))

        state, history = train_loop(trainer, state, run_data, steps=config.steps, eval_every=config.eval_interval,
                                    history=history, observers=observers, checkpoint_every=config.checkpoint_every,
                                    on_checkpoint=checkpoint, on_progress=bar.update)
        if history["diverged"]:
            bar.update(config.steps - history["diverged_at_step"])
        summary = summarise_run(run, history, stats, config.acquisition_threshold)
        summary["wall_time_s"] = round(time.time() - started, 3)
        results["runs"].append(summary)
        save(manager, (index + 1) * config.steps, state, progress_meta(history, True))
        write_json(out / RESULTS_FILE, results)
    bar.close()
    manager.close()
    from anatomy_jax.plots.pattern_rate import plot_all

    results["figures"] = plot_all(results, out)
    write_json(out / RESULTS_FILE, results)
    return results


def _resumable_settings(config: PatternRateConfig) -> dict[str, Any]:
    """The settings a resumed run must share with the run it continues (JSON-normalised)."""
    settings = dataclasses.asdict(config)
    for key in ("out", "resume", "overwrite", "keep_checkpoints"):
        settings.pop(key)
    return json.loads(json.dumps(settings))


def _resume_point(config, trainer, data, train_images, manager, results) -> tuple[int, Any]:
    """Restores the latest checkpoint: the index of the run to continue and (state, history)."""
    step, meta = latest_meta(manager)
    saved, now = meta.get("config", {}), _resumable_settings(config)
    changed = sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k))
    if changed:
        raise ValueError("cannot resume: the checkpoint was made with different settings ("
                         + ", ".join(f"{k}: {saved.get(k)!r} -> {now.get(k)!r}" for k in changed)
                         + "); use the original flags, or --overwrite")
    results["resumed_from_step"] = int(step)
    results["runs"] = list(meta["runs"])
    index = int(meta["run_index"])
    if meta["run_finished"]:
        return index + 1, None
    _, _, state = prepare_run(config, trainer, data, train_images, config.grid()[index])
    _, state, meta = restore_latest(manager, state)
    return index, (state, meta["history"])


def format_summary(results: dict[str, Any]) -> str:
    """A plain-text table of every run: settings, realised poison statistics and outcomes."""
    def fmt(v, spec):
        return "-" if v is None else format(v, spec)

    header = (f"{'lr':>8} {'f':>6} {'c':>5} {'seed':>4} {'real f':>7} {'real c':>6} {'acq step':>8} "
              f"{'final ASR':>9} {'final acc':>9} {'reliance':>8}  status")
    lines = [header, "-" * len(header)]
    for r in results["runs"]:
        p = r["patterns"][0]
        lines.append(
            f"{r['learning_rate']:>8g} {r['frequency']:>6g} {r['correlation']:>5g} {r['seed']:>4} "
            f"{fmt(p['realised_frequency'], '.4f'):>7} {fmt(p['realised_correlation'], '.3f'):>6} "
            f"{fmt(r['acquisition_step'], 'd'):>8} {fmt(r['final_attack_success_rate'], '.3f'):>9} "
            f"{fmt(r['final_clean_accuracy'], '.3f'):>9} {fmt(r['reliance'][-1] if r['reliance'] else None, '.2f'):>8}  "
            f"{'diverged at step %d' % r['diverged_at_step'] if r['diverged'] else 'ok'}")
    return "\n".join(lines)
