"""The pattern-rate study (seed 000): how fast and how strongly a net acquires a planted pattern,
as a function of the pattern's frequency, its correlation with the target label and the learning
rate. `train_and_evaluate(config, workdir)` runs the whole grid, for notebooks and the CLI alike.

The grid (pattern look x learning rate x frequency x correlation x seed; the look is the pattern
kind x patch size x alpha) is a list of run specs that the shared
study runner (`anatomy_jax.experiment.study`) trains as sweeps, checkpoints, resumes and streams
into results.json; this module keeps what is the study's own: its config, its grid, the summary
of a run and the figures. Each seed s gives the initialisation and the data order; the poison
selection comes from `poison_seed` (default: s), so `--poison-seed` holds the poisoned set fixed
across initialisations.
"""

from __future__ import annotations

import dataclasses
import itertools
import pathlib
from typing import Any, ClassVar, Sequence

import jax
from jax.experimental import multihost_utils

from anatomy_jax.data import Dataset
from anatomy_jax.experiment.options import DataOptions, DeviceOptions, OutputOptions, resumable_settings
from anatomy_jax.experiment.outputs import (CHECKPOINT_DIR, RESULTS_FILE, default_out_dir, environment,
                                            prepare_output_dir)
from anatomy_jax.utils.serialize import write_json
from anatomy_jax.experiment.study import Study, describe_layout, stream_results
from anatomy_jax.poison import (LOCATIONS, PATTERN_KINDS, BackdoorMetrics, PatternSpec, PoisonSpec, acquisition_step,
                                first_crossing_step)
from anatomy_jax.poison.patterns import PATCH_KINDS
from anatomy_jax.train import (ClassificationMetrics, PreparedRun, RunSpec, SweepObserver, TrainConfig, Trainer, batch_test_set,
                               initialize_multihost, is_primary_process, plan_run)
from anatomy_jax.train import make_trainer as build_trainer
from anatomy_jax.train import prepare_run as build_run
from anatomy_jax.train.config import train_config_of
from anatomy_jax.utils import flag, settings_errors


DEFAULT_CORRELATIONS = (0.0, 0.5, 1.0)


def auto_patch_size(image_shape: tuple[int, int, int]) -> int:
    """The default patch side: 2 px on images below 16 px (digits), else 3 px."""
    return 2 if min(image_shape[:2]) < 16 else 3


@dataclasses.dataclass(frozen=True)
class PatternRateConfig(OutputOptions, DeviceOptions, TrainConfig, DataOptions):
    """Everything the pattern-rate study needs; defaults suit the offline digits run (~1 min, 2 CPUs)."""

    DEFAULT_CORRELATIONS: ClassVar[tuple[float, ...]] = DEFAULT_CORRELATIONS  # when --correlations is not given

    pattern: str | None = flag(None, "pattern kind, the one-value form of --patterns (default: checkerboard)")
    patterns: tuple[str, ...] | None = flag(None, f"pattern kinds as a grid axis, e.g. checkerboard,solid,random "
                                                  f"(kinds: {', '.join(PATTERN_KINDS)})")
    patch_size: int | None = flag(None, "side of the square patch in pixels, the one-value form of --patch-sizes "
                                        "(auto: 2 below 16 px, else 3)")
    patch_sizes: tuple[int, ...] | None = flag(None, "patch sides as a grid axis, e.g. 1,2,3 (patch kinds only: "
                                                     "blend and noise have no size)")
    location: str = flag("bottom-right", f"patch location: {', '.join(LOCATIONS)}")
    alpha: float | None = flag(None, "pattern opacity/amplitude in (0, 1], the one-value form of --alphas (auto: 1 "
                                     "for patches, 0.2 blend, 0.1 noise)")
    alphas: tuple[float, ...] | None = flag(None, "opacities/amplitudes as a grid axis, e.g. 0.05,0.1,0.2 (for "
                                                  "blend and noise; patch kinds in the same grid stay pasted at "
                                                  "opacity 1; a grid of patch kinds only blends them)")
    pattern_seed: int = flag(0, "seed of the pattern's own random pixels (random, blend and noise patterns)")
    clean_label: bool = flag(False, "clean-label poisoning: stamp target-class images only, change no label (the "
                                    "correlation is 1 by construction: no correlation axis)")
    target: int = flag(0, "target class of the pattern")
    frequencies: tuple[float, ...] = flag((0.01, 0.03, 0.1), "pattern frequencies f: share of training images "
                                                            "that carry the pattern")
    correlations: tuple[float, ...] | None = flag(None, "correlations c = P(label = target | pattern) (default: "
                                                        "0,0.5,1; refused with --clean-label)")
    learning_rates: tuple[float, ...] = flag((0.01, 0.1), "base learning rates")
    seeds: tuple[int, ...] = flag((0, 1, 2), "seeds: initialisation and data order")
    poison_seed: int | None = flag(None, "seed of the poison selection (default: each run's seed)")
    acquisition_threshold: float = flag(0.5, "ASR that counts as acquired (sustained: reached and held at every "
                                             "later evaluation)")
    multihost: bool = flag(False, "join a multi-process job first (jax.distributed.initialize: TPU pod slices, "
                                  "several GPU hosts; see the README)")

    def validate(self) -> None:
        """Raises ValueError naming the first bad value (dataset-dependent checks come with the data)."""
        self.validate_data()
        self.validate_devices()
        self.validate_output()
        for one, many in (("pattern", "patterns"), ("patch_size", "patch_sizes"), ("alpha", "alphas")):
            if getattr(self, one) is not None and getattr(self, many) is not None:
                raise ValueError(f"give --{one.replace('_', '-')} or --{many.replace('_', '-')}, not both")
        if self.clean_label and self.correlations is not None:
            raise ValueError("--clean-label fixes the correlation at 1 (only target-class images carry the pattern "
                             "and no label changes): drop --correlations")
        for name, values in (("frequencies", self.frequencies), ("correlations", self.correlation_axis()),
                             ("alphas", self.alpha_axis())):
            bad = [v for v in values if v is not None and not 0.0 <= v <= 1.0]
            if bad:
                raise ValueError(f"{name} must lie in [0, 1], got {bad}")
        unknown = [k for k in self.pattern_kinds() if k not in PATTERN_KINDS]
        if unknown:
            raise ValueError(f"unknown pattern kind(s) {unknown}; choose from {', '.join(PATTERN_KINDS)}")
        if any(not lr > 0 for lr in self.learning_rates):
            raise ValueError(f"learning rates must be positive, got {list(self.learning_rates)}")
        if not 0.0 < self.acquisition_threshold <= 1.0:
            raise ValueError(f"acquisition_threshold must be in (0, 1], got {self.acquisition_threshold}")
        train_config_of(self).validate()

    def pattern_kinds(self) -> tuple[str, ...]:
        """The pattern-kind axis."""
        return self.patterns or (self.pattern or "checkerboard",)

    def correlation_axis(self) -> tuple[float, ...]:
        """The correlation axis: 1 alone for clean-label poisoning."""
        if self.clean_label:
            return (1.0,)
        return self.correlations if self.correlations is not None else self.DEFAULT_CORRELATIONS

    def alpha_axis(self) -> tuple[float | None, ...]:
        """The opacity/amplitude axis (None: each kind's default)."""
        return self.alphas or (self.alpha,)

    def patch_size_axis(self, image_shape: tuple[int, int, int] | None = None) -> tuple[int | None, ...]:
        """The patch-size axis (auto: 2 on images below 16 px, else 3; None while the shape is unknown)."""
        if self.patch_sizes:
            return self.patch_sizes
        if self.patch_size is not None or image_shape is None:
            return (self.patch_size,)
        return (auto_patch_size(image_shape),)

    def visibility_cells(self, image_shape: tuple[int, int, int] | None = None) -> list[dict[str, Any]]:
        """Every distinct look of the pattern: kind x patch size (patch kinds only) x alpha (`--alphas`
        applies to blend and noise; to patches only when the grid has no blend or noise kind)."""
        kinds = self.pattern_kinds()
        mixed = any(k in PATCH_KINDS for k in kinds) and any(k not in PATCH_KINDS for k in kinds)
        cells = []
        for kind in kinds:
            sizes = self.patch_size_axis(image_shape) if kind in PATCH_KINDS else (None,)
            alphas = (None,) if mixed and kind in PATCH_KINDS and self.alphas else self.alpha_axis()
            for size, alpha in itertools.product(sizes, alphas):
                cells.append({"pattern_kind": kind, "patch_size": size,
                              "alpha": PatternSpec(kind, alpha=alpha).opacity})
        return cells

    def pattern_spec(self, image_shape: tuple[int, int, int], cell: dict[str, Any] | None = None) -> PatternSpec:
        """The pattern of a visibility cell (default: the first) on images of `image_shape`."""
        cell = {**self.visibility_cells(image_shape)[0], **(cell or {})}  # a hand-made run may omit the look
        size = cell["patch_size"] if cell["patch_size"] is not None else auto_patch_size(image_shape)
        return PatternSpec(cell["pattern_kind"], size, self.location, cell["alpha"], seed=self.pattern_seed)

    def grid(self, image_shape: tuple[int, int, int] | None = None) -> list[dict[str, Any]]:
        """The runs, in order: visibility cell x learning rate x frequency x correlation x seed (runs
        with the same pattern are consecutive, so they train together). With `image_shape`, an auto
        patch size is recorded as the size it resolves to."""
        return [{**cell, "learning_rate": lr, "frequency": f, "correlation": c, "seed": s}
                for cell, lr, f, c, s in itertools.product(self.visibility_cells(image_shape), self.learning_rates,
                                                           self.frequencies, self.correlation_axis(), self.seeds)]

    def run_spec(self, run: dict[str, Any], image_shape: tuple[int, int, int]) -> RunSpec:
        """One grid entry as a run spec: its poison spec on the shared training config."""
        poison = PoisonSpec(self.pattern_spec(image_shape, run), self.target, run["frequency"], run["correlation"],
                            self.clean_label)
        return RunSpec(train_config_of(self), run["seed"], run["learning_rate"], (poison,), self.poison_seed, grid=run)

    def run_specs(self, image_shape: tuple[int, int, int]) -> list[RunSpec]:
        """The grid as run specs."""
        return [self.run_spec(run, image_shape) for run in self.grid(image_shape)]


# What every run of the grid records on the test set: clean accuracy and loss, ASR and reliance.
METRICS = (ClassificationMetrics(), BackdoorMetrics())


def pattern_entry(stats: dict, history: dict, k: int, threshold: float) -> dict[str, Any]:
    """Pattern k of a run: its realised statistics, its curves (aligned with `history["steps"]`) and
    its acquisition steps (sustained, and the first crossing)."""
    steps = history["steps"]

    def curve(name: str) -> list:
        return [None if v is None else v[k] for v in history[name]]

    asr = curve("attack_success_rate")
    return {**stats, "attack_success_rate": asr, "reliance": curve("reliance"),
            "clean_target_rate": curve("clean_target_rate"),
            "acquisition_step": acquisition_step(asr, steps, threshold),
            "acquisition_step_90": acquisition_step(asr, steps, max(threshold, 0.9)),
            "first_crossing_step": first_crossing_step(asr, steps, threshold)}


def summarise_run(spec: RunSpec, history: dict, stats: list[dict], tracked: Any = None,
                  threshold: float = 0.5) -> dict[str, Any]:
    """One entry of results.json["runs"] (top-level curves are those of the first pattern)."""
    steps = history["steps"]
    patterns = [pattern_entry(st, history, k, threshold) for k, st in enumerate(stats)]
    first = patterns[0]
    return {
        **spec.grid,
        "pattern": first["name"],
        "target": first["target"],
        "steps": steps,
        "train_loss": history["train_loss"],
        "test_loss": history["test_loss"],
        "clean_accuracy": history["clean_accuracy"],
        **{key: first[key] for key in ("attack_success_rate", "reliance", "clean_target_rate", "acquisition_step",
                                       "acquisition_step_90", "first_crossing_step")},
        "final_clean_accuracy": history["clean_accuracy"][-1] if steps else None,
        "final_attack_success_rate": first["attack_success_rate"][-1] if steps else None,
        "final_clean_target_rate": first["clean_target_rate"][-1] if steps else None,
        "diverged": history["diverged"],
        "diverged_at_step": history["diverged_at_step"],
        "patterns": patterns,
    }


def dataset_summary(data: Dataset) -> dict[str, Any]:
    """What results.json records of the dataset a poisoning study trained on."""
    return {"name": data.name, "train_images": len(data.train), "test_images": len(data.test),
            "image_shape": list(data.image_shape), "num_classes": data.num_classes}


def load_study_data(config: PatternRateConfig) -> Dataset:
    """The validated config's dataset (SettingsError for bad settings)."""
    with settings_errors():
        config.validate()
        return config.load_data()


def make_trainer(config: PatternRateConfig, data: Dataset) -> Trainer:
    """The trainer every run of the grid shares."""
    return build_trainer(train_config_of(config), data)


def prepare_run(config: PatternRateConfig, trainer: Trainer, data: Dataset, images: jax.Array,
                run: dict[str, Any]) -> PreparedRun:
    """One run of the grid (a `config.grid()` entry) prepared by hand, for notebooks and tests:
    (device data, realised poison statistics, initial state). Studies use `Study` instead."""
    spec = config.run_spec(run, data.image_shape)
    test = batch_test_set(data.test.images, data.test.labels, trainer.eval_batch_size)
    return build_run(trainer, spec, images, test, plan_run(spec, data), METRICS)


def prepare_study(config: PatternRateConfig) -> tuple[Dataset, Study]:
    """Every check that can fail, before anything is written: settings, data, plans, layout."""
    with settings_errors():
        config.validate()
        data = config.load_data()
    return data, Study.prepare(config.run_specs(data.image_shape), data, config.sweep_options(), METRICS)


def _sync(name: str) -> None:
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)


def train_and_evaluate(config: PatternRateConfig, workdir: str | pathlib.Path | None = None, *,
                       observers: Sequence[SweepObserver] = (), progress: bool = True) -> dict[str, Any]:
    """Runs the grid into `workdir` (default `config.out`); returns the results dict.

    results.json is rewritten at every evaluation and checkpoint (each run with its `status`).
    `observers` are sweep observers (`per_run` adapts single-run ones); they see each chunk's runs,
    padding runs included. Raises SettingsError for bad settings (before `workdir` is touched) and
    `Interrupted` after saving a checkpoint when SIGINT/SIGTERM arrives. In a multi-process job
    (`--multihost`) every process calls this with the same config; process 0 writes results and
    figures.
    """
    if config.multihost:
        initialize_multihost()
    data, study = prepare_study(config)
    primary = is_primary_process()
    out = prepare_output_dir(pathlib.Path(workdir or config.out or default_out_dir("pattern_rate")),
                             resume=config.resume, overwrite=config.overwrite, primary=primary)
    _sync("anatomy_jax:output-ready")
    results = {"config": dataclasses.asdict(config), **environment(), "resumed_from_step": None,
               "dataset": dataset_summary(data),
               "runs": study.pending_entries()}
    stream = stream_results(results, out / RESULTS_FILE, resume=config.resume, write=primary,
                            announce=progress and primary)
    outcome = study.run(out / CHECKPOINT_DIR, settings=resumable_settings(config), resume=config.resume,
                        summarise=lambda *a: summarise_run(*a, threshold=config.acquisition_threshold),
                        keep_checkpoints=config.keep_checkpoints, observers=observers, on_start=stream.on_start,
                        on_update=stream.on_update, progress=progress and primary, desc="pattern_rate")
    stream.on_update(outcome.entries)
    if primary:
        from anatomy_jax.plots.pattern_rate import plot_all

        results["figures"] = plot_all(results, out)
        write_json(out / RESULTS_FILE, results)
    _sync("anatomy_jax:results-written")
    return results


VISIBILITY_AXES = ("pattern_kind", "patch_size", "alpha")


def varying_axes(runs: list[dict], axes: Sequence[str] = VISIBILITY_AXES) -> list[str]:
    """The axes among `axes` that take more than one value across `runs`."""
    return [a for a in axes if len({r.get(a) for r in runs}) > 1]


def format_summary(results: dict[str, Any]) -> str:
    """A plain-text table of every run: settings, realised poison statistics and outcomes.

    `acq` is the sustained acquisition step (ASR >= threshold from there on), `1st` the first
    crossing; `tgt` the final clean target rate (the share of non-target images called the target
    without the pattern: the baseline of the ASR)."""
    def fmt(v, spec):
        return "-" if v is None else format(v, spec)

    runs = results["runs"]
    facets = varying_axes(runs)
    header = "".join(f"{a[:12]:>13}" for a in facets) + (
        f"{'lr':>8} {'f':>6} {'c':>5} {'seed':>4} {'real f':>7} {'real c':>6} {'acq':>5} {'1st':>5} "
        f"{'final ASR':>9} {'tgt':>5} {'final acc':>9} {'reliance':>8}  status")
    lines = [describe_layout(results["sweep"], len(runs)), "", header, "-" * len(header)] \
        if "sweep" in results else [header, "-" * len(header)]
    for r in runs:
        p = r["patterns"][0]
        last_reliance = r["reliance"][-1] if r["reliance"] else None
        lines.append(
            "".join(f"{str(r.get(a))[:12]:>13}" for a in facets)
            + f"{r['learning_rate']:>8g} {r['frequency']:>6g} {r['correlation']:>5g} {r['seed']:>4} "
            f"{fmt(p['realised_frequency'], '.4f'):>7} {fmt(p['realised_correlation'], '.3f'):>6} "
            f"{fmt(r['acquisition_step'], 'd'):>5} {fmt(r['first_crossing_step'], 'd'):>5} "
            f"{fmt(r['final_attack_success_rate'], '.3f'):>9} {fmt(r['final_clean_target_rate'], '.2f'):>5} "
            f"{fmt(r['final_clean_accuracy'], '.3f'):>9} {fmt(last_reliance, '.2f'):>8}  "
            f"{'diverged at step %d' % r['diverged_at_step'] if r['diverged'] else 'ok'}")
    return "\n".join(lines)
