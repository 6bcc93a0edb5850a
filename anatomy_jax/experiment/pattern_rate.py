"""The pattern-rate study (seed 000): how fast and how strongly a net acquires a planted pattern,
as a function of the pattern's frequency, its correlation with the target label and the learning
rate. `train_and_evaluate(config, workdir)` runs the whole grid, for notebooks and the CLI alike.

The grid trains as sweeps (`anatomy_jax.train.sweep`): chunks of `runs_per_chunk` runs advance
together with the strategy the layout's rule picks (vmap or loop), the run axis sharded over
every device. Keys: each seed s gives the initialisation and the data order
(`jax.random.key(s)`, split in two); the poison selection comes from `poison_seed` (default: s),
so `--poison-seed` holds the poisoned set fixed across initialisations. One orbax
CheckpointManager per output directory numbers checkpoints by global step (index of the chunk's
first run x steps + step), so `<out>/checkpoints/<step>/` covers the whole grid and `resume=True`
continues mid-chunk with identical results and the same layout.
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
from jax.experimental import multihost_utils
from jax.sharding import Mesh
from tqdm.auto import tqdm

from anatomy_jax.data import DATASET_NAMES, Dataset, load_dataset, subset
from anatomy_jax.models import MODEL_NAMES, create_model
from anatomy_jax.poison import LOCATIONS, PATTERN_KINDS, PatternSpec, PoisonSpec, make_patterns, plan_poison
from anatomy_jax.experiment.outputs import (CHECKPOINT_DIR, RESULTS_FILE, default_out_dir, environment,
                                            prepare_output_dir, write_json)
from anatomy_jax.adversarial import NORMS
from anatomy_jax.train import (OPTIMIZERS, SCHEDULES, STRATEGIES, AdversarialTraining, RunData, SweepObserver, Trainer,
                               acquisition_step, auto_runs_per_device, checkpoint_manager, choose_strategy, initialize_multihost,
                               is_primary_process, latest_meta, make_optimizer, make_sweep_mesh, pad_runs,
                               place_states, restore_latest, runs_axis_size, save, stack_runs, stack_trees, to_host,
                               train_sweep)
from anatomy_jax.train.sharding import DATA


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
    adversarial_eps: float = flag(0.0, "PGD adversarial training: radius of the attack on each training batch "
                                       "(pixels in [0, 1]; e.g. 8/255 = 0.031 on CIFAR-10, 0.3 on MNIST; "
                                       "0 = standard training)")
    adversarial_steps: int = flag(7, "PGD steps of adversarial training (step size 2.5 eps / steps)")
    adversarial_norm: str = flag("linf", f"norm of adversarial training's ball: {', '.join(NORMS)}")
    augment: bool = flag(True, "random crop (pad 4 on images >= 32 px) and flip where the dataset allows it")
    seeds: tuple[int, ...] = flag((0,), "seeds: initialisation and data order")
    poison_seed: int | None = flag(None, "seed of the poison selection (default: each run's seed)")
    steps: int = flag(400, "training steps per run")
    batch_size: int = flag(128, "batch size")
    eval_every: int | None = flag(None, "evaluate on the test set every this many steps (auto: steps / 16, "
                                        "i.e. 16 points per curve)")
    checkpoint_every: int = flag(100, "save an orbax checkpoint every this many steps (and at each chunk's end)")
    keep_checkpoints: int = flag(3, "how many checkpoints to keep")
    acquisition_threshold: float = flag(0.5, "ASR that counts as acquired")
    strategy: str = flag("auto", "how the runs train together: vmap (stacked runs, one program), loop (each run's "
                                 "own jitted steps, interleaved), auto (loop on one CPU device, else vmap)")
    runs_per_device: int = flag(0, "runs trained at once per device; a larger grid runs in chunks (0 = auto: "
                                   "as many as fit in half the device memory)")
    devices: int = flag(0, "devices to use, the run axis sharded over them (0 = all)")
    data_parallel: int = flag(1, "devices that split each run's batch (for models too big for one device per run)")
    multihost: bool = flag(False, "join a multi-process job first (jax.distributed.initialize: TPU pod slices, "
                                  "several GPU hosts; see the README)")
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
        if self.runs_per_device < 0 or self.devices < 0 or self.data_parallel < 1:
            raise ValueError("runs_per_device and devices must be >= 0 and data_parallel >= 1")
        if self.strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {self.strategy!r}; choose one of {', '.join(STRATEGIES)}")
        if not 0.0 < self.acquisition_threshold <= 1.0:
            raise ValueError(f"acquisition_threshold must be in (0, 1], got {self.acquisition_threshold}")
        if not self.width > 0:
            raise ValueError(f"width must be > 0, got {self.width}")
        if self.resume and self.overwrite:
            raise ValueError("choose one of --resume and --overwrite, not both")
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
                   flip=config.augment and data.flip_ok, label_smoothing=config.label_smoothing,
                   adversarial=config.adversarial)


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


@dataclasses.dataclass(frozen=True)
class SweepLayout:
    """How the grid trains: the strategy, the device mesh and how many runs train together."""

    strategy: str
    mesh: Mesh
    runs_per_chunk: int

    def describe(self, num_runs: int) -> dict[str, Any]:
        """The layout as results.json records it."""
        device = self.mesh.devices.flat[0]
        return {"strategy": self.strategy, "num_devices": int(self.mesh.size), "runs_axis": runs_axis_size(self.mesh),
                "data_parallel": int(self.mesh.shape[DATA]), "runs_per_chunk": self.runs_per_chunk,
                "num_chunks": -(-num_runs // self.runs_per_chunk), "process_count": jax.process_count(),
                "platform": device.platform, "device_kind": device.device_kind}


def plan_layout(config: PatternRateConfig, trainer: Trainer, data: Dataset, example_state: Any,
                saved: dict[str, Any] | None = None) -> SweepLayout:
    """The sweep layout: the strategy rule and memory sizing, or what a resumed sweep saved."""
    mesh = make_sweep_mesh(config.devices, config.data_parallel)
    num_runs = len(config.grid())
    if saved is not None:
        if config.strategy not in ("auto", saved["strategy"]):
            raise ValueError(f"cannot resume: the sweep ran with strategy {saved['strategy']!r}, not "
                             f"{config.strategy!r}; leave --strategy on auto")
        strategy, runs_per_chunk = saved["strategy"], int(saved["runs_per_chunk"])
        choose_strategy(strategy, jax.default_backend(), mesh.size)  # still valid on these devices?
        if strategy == "vmap" and runs_per_chunk % runs_axis_size(mesh):
            raise ValueError(f"cannot resume: chunks of {runs_per_chunk} runs do not split over "
                             f"{runs_axis_size(mesh)} devices")
        return SweepLayout(strategy, mesh, runs_per_chunk)
    strategy = choose_strategy(config.strategy, jax.default_backend(), mesh.size)
    per_device = config.runs_per_device or auto_runs_per_device(
        trainer, example_state, data.image_shape, num_runs, runs_axis_size(mesh), strategy,
        reserved_bytes=data.train.images.nbytes + data.test.images.nbytes)
    return SweepLayout(strategy, mesh, per_device * runs_axis_size(mesh))


def _sync(name: str) -> None:
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)


def train_and_evaluate(config: PatternRateConfig, workdir: str | pathlib.Path | None = None, *,
                       observers: Sequence[SweepObserver] = (), progress: bool = True) -> dict[str, Any]:
    """Runs the grid as a sweep into `workdir` (default `config.out`); returns the results dict.

    The grid is split into chunks of `runs_per_chunk` runs; each chunk trains as one sweep with the
    layout's strategy (`anatomy_jax.train.sweep`), and results.json is written after every chunk.
    `observers` are sweep observers (`per_run` adapts single-run ones); they see each chunk's runs,
    padding runs included. Raises ValueError for bad settings and OutputExistsError when the
    directory holds results and neither `config.resume` nor `config.overwrite` is set. In a
    multi-process job (`jax.distributed.initialize()` first) every process calls this with the
    same config; process 0 writes results and figures.
    """
    config.validate()
    if config.multihost:
        initialize_multihost()
    out = pathlib.Path(workdir or config.out or default_out_dir("pattern_rate"))
    data = load_study_data(config)
    config.pattern_spec(data.image_shape).validate(data.image_shape)
    primary = is_primary_process()
    out = prepare_output_dir(out, resume=config.resume, overwrite=config.overwrite, primary=primary)
    _sync("anatomy_jax:output-ready")
    trainer = make_trainer(config, data)
    train_images = jnp.asarray(data.train.images)
    manager = checkpoint_manager(out / CHECKPOINT_DIR, config.keep_checkpoints)
    grid = config.grid()
    results = {"config": dataclasses.asdict(config), **environment(), "resumed_from_step": None,
               "dataset": {"name": data.name, "train_images": len(data.train), "test_images": len(data.test),
                           "image_shape": list(data.image_shape), "num_classes": data.num_classes},
               "runs": []}
    saved = _saved_progress(config, manager) if config.resume and manager.latest_step() is not None else None
    if config.resume and saved is None:
        print(f"note: nothing to resume in {out}; starting from scratch", file=sys.stderr)
    example_state = prepare_run(config, trainer, data, train_images, grid[0])[2]
    layout = plan_layout(config, trainer, data, example_state, saved and saved[1]["sweep"])
    results["sweep"] = layout.describe(len(grid))
    start, resume_mid_chunk = 0, False
    if saved is not None:
        step, meta = saved
        results["resumed_from_step"], results["runs"] = int(step), list(meta["runs"])
        start = meta["chunk_start"] + (meta["chunk_runs"] if meta["chunk_finished"] else 0)
        resume_mid_chunk = not meta["chunk_finished"]
    if progress and primary:
        print(describe_layout(results["sweep"], len(grid)), file=sys.stderr)
    bar = tqdm(total=len(grid) * config.steps, initial=start * config.steps, desc="pattern_rate", unit="run-step",
               disable=not (progress and primary))
    for chunk_start in range(start, len(grid), layout.runs_per_chunk):
        runs = grid[chunk_start:chunk_start + layout.runs_per_chunk]
        prepared = [prepare_run(config, trainer, data, train_images, run) for run in runs]
        if layout.strategy == "vmap":
            prepared = pad_runs(prepared, runs_axis_size(layout.mesh))
        sweep_data = stack_runs([p[0] for p in prepared])
        states = place_states(stack_trees([p[2] for p in prepared]), layout.strategy, layout.mesh)
        histories = None
        if resume_mid_chunk:
            step, states, meta = restore_latest(manager, states)
            histories, resume_mid_chunk = meta["histories"], False
            bar.update(int(step) - chunk_start * config.steps)
        started = time.time()

        def progress_meta(histories, finished, chunk_start=chunk_start, num_runs=len(runs)):
            return {"chunk_start": chunk_start, "chunk_runs": num_runs, "chunk_finished": finished,
                    "histories": histories, "runs": results["runs"], "config": _resumable_settings(config),
                    "sweep": {"strategy": layout.strategy, "runs_per_chunk": layout.runs_per_chunk}}

        def checkpoint(states, histories, chunk_start=chunk_start):
            save(manager, chunk_start * config.steps + int(to_host(states.step)[0]), states,
                 progress_meta(histories, False))

        states, histories = train_sweep(
            trainer, states, sweep_data, steps=config.steps, eval_every=config.eval_interval,
            strategy=layout.strategy, mesh=layout.mesh, histories=histories, observers=observers,
            checkpoint_every=config.checkpoint_every, on_checkpoint=checkpoint,
            on_progress=lambda n, k=len(runs): bar.update(n * k))
        bar.n = (chunk_start + len(runs)) * config.steps  # diverged runs stop early
        bar.refresh()
        wall = round((time.time() - started) / len(runs), 3)
        for run, (_, stats, _), history in zip(runs, prepared, histories):
            summary = summarise_run(run, history, stats, config.acquisition_threshold)
            summary["wall_time_s"] = wall  # the chunk's wall time shared equally by its runs
            results["runs"].append(summary)
        save(manager, (chunk_start + len(runs)) * config.steps, states, progress_meta(histories, True))
        if primary:
            write_json(out / RESULTS_FILE, results)
    bar.close()
    manager.close()
    if primary:
        from anatomy_jax.plots.pattern_rate import plot_all

        results["figures"] = plot_all(results, out)
        write_json(out / RESULTS_FILE, results)
    _sync("anatomy_jax:results-written")
    return results


def describe_layout(sweep: dict[str, Any], num_runs: int) -> str:
    """One line: strategy, runs per chunk and devices."""
    return (f"sweep: {num_runs} runs, strategy {sweep['strategy']}, {sweep['runs_per_chunk']} runs together "
            f"({sweep['num_chunks']} chunk{'s' if sweep['num_chunks'] > 1 else ''}) on {sweep['num_devices']} "
            f"{sweep['platform']} device{'s' if sweep['num_devices'] > 1 else ''} ({sweep['device_kind']}"
            f"{', data parallel x%d' % sweep['data_parallel'] if sweep['data_parallel'] > 1 else ''}"
            f"{', %d processes' % sweep['process_count'] if sweep['process_count'] > 1 else ''})")


# Settings that may change between a run and its resumption (the layout comes from the checkpoint).
_NOT_COMPARED_ON_RESUME = ("out", "resume", "overwrite", "keep_checkpoints", "strategy", "runs_per_device",
                           "devices", "data_parallel", "multihost")


def _resumable_settings(config: PatternRateConfig) -> dict[str, Any]:
    """The settings a resumed run must share with the run it continues (JSON-normalised)."""
    settings = dataclasses.asdict(config)
    for key in _NOT_COMPARED_ON_RESUME:
        settings.pop(key)
    return json.loads(json.dumps(settings))


def _saved_progress(config: PatternRateConfig, manager) -> tuple[int, dict[str, Any]]:
    """(step, meta) of the latest checkpoint, after checking it was made with the same settings."""
    step, meta = latest_meta(manager)
    saved, now = meta.get("config", {}), _resumable_settings(config)
    changed = sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k))
    if changed:
        raise ValueError("cannot resume: the checkpoint was made with different settings ("
                         + ", ".join(f"{k}: {saved.get(k)!r} -> {now.get(k)!r}" for k in changed)
                         + "); use the original flags, or --overwrite")
    if "sweep" not in meta:
        raise ValueError("cannot resume: the checkpoint predates sweeps (anatomy_jax < 0.2); use --overwrite")
    return step, meta


def format_summary(results: dict[str, Any]) -> str:
    """A plain-text table of every run: settings, realised poison statistics and outcomes."""
    def fmt(v, spec):
        return "-" if v is None else format(v, spec)

    header = (f"{'lr':>8} {'f':>6} {'c':>5} {'seed':>4} {'real f':>7} {'real c':>6} {'acq step':>8} "
              f"{'final ASR':>9} {'final acc':>9} {'reliance':>8}  status")
    lines = [describe_layout(results["sweep"], len(results["runs"])), "", header, "-" * len(header)] \
        if "sweep" in results else [header, "-" * len(header)]
    for r in results["runs"]:
        p = r["patterns"][0]
        lines.append(
            f"{r['learning_rate']:>8g} {r['frequency']:>6g} {r['correlation']:>5g} {r['seed']:>4} "
            f"{fmt(p['realised_frequency'], '.4f'):>7} {fmt(p['realised_correlation'], '.3f'):>6} "
            f"{fmt(r['acquisition_step'], 'd'):>8} {fmt(r['final_attack_success_rate'], '.3f'):>9} "
            f"{fmt(r['final_clean_accuracy'], '.3f'):>9} {fmt(r['reliance'][-1] if r['reliance'] else None, '.2f'):>8}  "
            f"{'diverged at step %d' % r['diverged_at_step'] if r['diverged'] else 'ok'}")
    return "\n".join(lines)
