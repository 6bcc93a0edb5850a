"""Competing patterns (seed 000): several patterns planted in one dataset, which is learned first?

Each pattern has its own kind, size, location, target, frequency and correlation (given as
`--pattern-spec` texts or a `--patterns-file`; see `anatomy_jax.poison.spec_text`), on disjoint
training images. The study trains them as one sweep over learning rates, schedules (`constant`,
`step`) and seeds, and records per pattern the ASR, reliance and clean target rate over time and
the sustained acquisition step; per run, the acquisition order and, for step schedules, how many
decays came before each pattern's acquisition. The whole grid trains as one sweep: the schedule,
like the learning rate, is per-run optimizer state (`anatomy_jax.train.optim.with_schedule`).
`run_pattern_competition(config, workdir)` runs what `experiments/pattern_competition.py` runs.
results.json uses the pattern-rate schema (`runs[].patterns[]`), plus `runs[].acquisition_order`
and `runs[].decay_steps`.
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
import math
import pathlib
from typing import Any

import numpy as np

from anatomy_jax.data import Dataset
from anatomy_jax.experiment.options import DataOptions, DeviceOptions, OutputOptions, resumable_settings
from anatomy_jax.experiment.outputs import (CHECKPOINT_DIR, RESULTS_FILE, default_out_dir, environment,
                                            prepare_output_dir)
from anatomy_jax.experiment.gradient_alignment import check_probe_settings, probe_tracking
from anatomy_jax.experiment.pattern_rate import METRICS, auto_patch_size, dataset_summary, pattern_entry
from anatomy_jax.experiment.study import Study, describe_layout, stream_results
from anatomy_jax.poison.spec_text import NamedPoison, check_unique_names, load_patterns_file, parse_pattern_spec
from anatomy_jax.train import RunSpec, TrainConfig
from anatomy_jax.train.optim import SCHEDULES, decay_steps
from anatomy_jax.utils import flag, settings_errors
from anatomy_jax.utils.serialize import write_json
from anatomy_jax.utils.statistics import rank_association

# Two patterns that differ only in frequency (and, necessarily, in where they sit), and a third as
# frequent as the first but less visible (one pixel instead of a 2x2 checkerboard, in a third
# corner): all with the same target and perfectly correlated with it.
DEFAULT_PATTERN_SPECS = (
    "checkerboard:size=2:at=top-left:target=1:f=0.1:c=1:name=frequent",
    "checkerboard:size=2:at=bottom-right:target=1:f=0.03:c=1:name=rare",
    "checkerboard:size=1:at=top-right:target=1:f=0.1:c=1:name=faint",
)


@dataclasses.dataclass(frozen=True)
class PatternCompetitionConfig(OutputOptions, DeviceOptions, TrainConfig, DataOptions):
    """Several patterns in one dataset; defaults run on digits in under 3 minutes on 2 CPU cores."""

    pattern_spec: tuple[str, ...] = flag(DEFAULT_PATTERN_SPECS, "one planted pattern, KIND[:key=value]... (see the "
                                                                "syntax above); give it once per pattern",
                                         repeat=True)
    patterns_file: str | None = flag(None, "JSON list of pattern objects with the same keys plus \"kind\" (instead "
                                           "of --pattern-spec)")
    schedule: str | None = flag(None, "one learning-rate schedule, the one-value form of --schedules")
    schedules: tuple[str, ...] | None = flag(None, f"learning-rate schedules as a grid axis ({', '.join(SCHEDULES)}; "
                                                   f"step: x0.1 after 1/3 and 2/3 of the steps; default: "
                                                   f"constant,step)")
    steps: int = flag(300, "training steps per run")
    eval_every: int | None = flag(20, "evaluate every this many steps (the step schedule's decays at 1/3 and 2/3 "
                                      "fall on evaluations when they are multiples of it)")
    learning_rates: tuple[float, ...] = flag((0.01, 0.1), "base learning rates")
    seeds: tuple[int, ...] = flag((0, 1, 2), "seeds: initialisation and data order")
    poison_seed: int | None = flag(None, "seed of the poison selection (default: each run's seed)")
    acquisition_threshold: float = flag(0.5, "ASR that counts as acquired (sustained: reached and held at every "
                                             "later evaluation)")
    probe: bool = flag(False, "also probe each pattern's gradient share at every evaluation (vmapped over the runs) "
                              "and test whether the early share predicts the acquisition order")
    early_step: int = flag(25, "with --probe: the evaluation step whose gradient shares predict the order")
    probe_size: int = flag(128, "with --probe: training images in the probe batch (stratified, weighted back to "
                                "the training set's composition)")
    chunk_size: int = flag(32, "with --probe: examples per chunk of per-example gradients")

    def validate(self) -> None:
        """Raises ValueError naming the first bad value (dataset-dependent checks come with the data)."""
        self.validate_data()
        self.validate_devices()
        self.validate_output()
        if self.patterns_file and self.pattern_spec != DEFAULT_PATTERN_SPECS:
            raise ValueError("give --pattern-spec or --patterns-file, not both")
        if self.schedule is not None and self.schedules is not None:
            raise ValueError("give --schedule or --schedules, not both")
        poisons = self.named_poisons()
        if not poisons:
            raise ValueError("the study needs at least one pattern")
        if self.eval_every is not None and self.eval_every <= 0:
            raise ValueError(f"eval_every must be positive, got {self.eval_every}")
        bad = [s for s in self.schedule_axis() if s not in SCHEDULES]
        if bad:
            raise ValueError(f"unknown schedule(s) {bad}; choose from {', '.join(SCHEDULES)}")
        for name, values in (("learning rates", self.learning_rates), ("seeds", self.seeds),
                             ("schedules", self.schedule_axis())):
            if len(set(values)) != len(values):
                raise ValueError(f"{name} repeat a value: {list(values)}")
        if any(not lr > 0 for lr in self.learning_rates):
            raise ValueError(f"learning rates must be positive, got {list(self.learning_rates)}")
        if not 0.0 < self.acquisition_threshold <= 1.0:
            raise ValueError(f"acquisition_threshold must be in (0, 1], got {self.acquisition_threshold}")
        for s in self.schedule_axis():
            self.train_config(s).validate()
        if self.probe:
            check_probe_settings(self.early_step, self.train_config("constant").eval_interval, self.steps,
                                 self.probe_size, self.chunk_size)

    def schedule_axis(self) -> tuple[str, ...]:
        if self.schedule is not None:
            return (self.schedule,)
        return self.schedules if self.schedules is not None else ("constant", "step")

    def train_config(self, schedule: str) -> TrainConfig:
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(TrainConfig) if f.name != "schedule"}
        return TrainConfig(**fields, schedule=schedule)

    def named_poisons(self, image_shape: tuple[int, int, int] | None = None) -> list[NamedPoison]:
        """The planted patterns, in the order given (unique names); patch sizes default as in the
        pattern-rate study when `image_shape` is known."""
        size = auto_patch_size(image_shape) if image_shape is not None else None
        if self.patterns_file:
            poisons = load_patterns_file(self.patterns_file, default_size=size)
        else:
            poisons = [parse_pattern_spec(t, default_size=size) for t in self.pattern_spec]
        check_unique_names(poisons)
        return poisons

    def grid(self) -> list[dict[str, Any]]:
        """The runs, in order: schedule x learning rate x seed (all of them one sweep)."""
        return [{"schedule": sch, "learning_rate": lr, "seed": s}
                for sch, lr, s in itertools.product(self.schedule_axis(), self.learning_rates, self.seeds)]

    def run_specs(self, image_shape: tuple[int, int, int]) -> list[RunSpec]:
        poisons = tuple(p.poison for p in self.named_poisons(image_shape))
        return [RunSpec(self.train_config(run["schedule"]), run["seed"], run["learning_rate"], poisons,
                        self.poison_seed, grid=run) for run in self.grid()]


def acquisition_order(patterns: list[dict]) -> list[str]:
    """Pattern names, the acquired ones first by acquisition step (ties: in the order given), then
    the others in the order given."""
    acquired = sorted((p for p in patterns if p["acquisition_step"] is not None), key=lambda p: p["acquisition_step"])
    return [p["name"] for p in acquired] + [p["name"] for p in patterns if p["acquisition_step"] is None]


def summarise_competition_run(spec: RunSpec, history: dict, stats: list[dict], names: list[str], threshold: float,
                              tracked: Any = None) -> dict[str, Any]:
    """One entry of results.json["runs"]: per pattern its curves and acquisition, the order."""
    steps = history["steps"]
    decays = decay_steps(spec.config.schedule, spec.config.steps, spec.config.warmup_steps)
    patterns = []
    for k, (name, st) in enumerate(zip(names, stats)):
        entry = {**pattern_entry(st, history, k, threshold), "name": name, "pattern": st["name"]}
        acquired = entry["acquisition_step"]
        entry["decays_before_acquisition"] = None if acquired is None else sum(d < acquired for d in decays)
        # a decay between the previous evaluation and the acquisition step: it may have come after
        # the ASR rose to stay (the evaluations cannot tell)
        previous = max([s for s in steps if acquired is not None and s < acquired], default=0)
        entry["decay_order_ambiguous"] = acquired is not None and any(previous < d < acquired for d in decays)
        patterns.append(entry)
    return {
        **spec.grid,
        "steps": steps,
        "train_loss": history["train_loss"],
        "test_loss": history["test_loss"],
        "clean_accuracy": history["clean_accuracy"],
        "final_clean_accuracy": history["clean_accuracy"][-1] if steps else None,
        "decay_steps": decays,
        "acquisition_order": acquisition_order(patterns),
        "acquired": sum(p["acquisition_step"] is not None for p in patterns),
        "diverged": history["diverged"],
        "diverged_at_step": history["diverged_at_step"],
        "patterns": patterns,
        **({"probes": tracked} if tracked is not None else {}),
    }


def order_text(run: dict) -> str:
    """The acquired patterns in order, ties (same evaluation) joined by "=": "a > b = c"."""
    steps = {p["name"]: p["acquisition_step"] for p in run["patterns"]}
    acquired = run["acquisition_order"][:run["acquired"]]
    if not acquired:
        return "(none acquired)"
    text = acquired[0]
    for before, name in zip(acquired, acquired[1:]):
        text += (" = " if steps[name] == steps[before] else " > ") + name
    return text


def order_summary(runs: list[dict]) -> list[dict[str, Any]]:
    """Per (schedule, learning rate): how often each acquisition order occurred over the seeds."""
    groups: dict[tuple, list[dict]] = collections.defaultdict(list)
    for r in runs:
        if r.get("status", "finished") in ("finished", "diverged"):
            groups[(r["schedule"], r["learning_rate"])].append(r)
    out = []
    for (schedule, lr), group in groups.items():
        counts = collections.Counter(order_text(r) for r in group if not r["diverged"])
        out.append({"schedule": schedule, "learning_rate": lr, "runs": len(group),
                    "diverged": sum(r["diverged"] for r in group),
                    "orders": [{"order": o, "count": n} for o, n in counts.most_common()]})
    return out


def probe_order_analysis(results: dict[str, Any], early_step: int) -> dict[str, Any]:
    """Does a pattern's early gradient share predict when it is acquired, relative to the other
    patterns of its run? Pooled over runs: the Spearman of each pattern's projection share at
    `early_step` (its target-labelled group, at the real composition) with its sustained
    acquisition step (never = censored after the last step), permuted within runs, and the partial
    Spearman given the patterns' log f and c; plus how often the largest share is acquired first."""
    runs = [r for r in results["runs"] if not r["diverged"] and r.get("probes")]
    never = results["config"]["steps"] + 1
    x, y, design, run_ids, first_hits = [], [], [], [], 0
    for i, r in enumerate(runs):
        record = next(p for p in r["probes"] if p["step"] == early_step)
        shares = [record["projection_share"][1 + 2 * k] for k in range(len(r["patterns"]))]
        x += shares
        y += [never if p["acquisition_step"] is None else p["acquisition_step"] for p in r["patterns"]]
        design += [[math.log(max(p["frequency"], 1e-12)), p["correlation"]] for p in r["patterns"]]
        run_ids += [i] * len(shares)
        first_hits += bool(r["acquired"]) and r["acquisition_order"][0] == r["patterns"][int(np.argmax(shares))]["name"]
    covariates = np.asarray(design, float).reshape(len(x), 2)
    stats = rank_association(x, y, covariates, strata=run_ids, clusters=run_ids, seed=0)
    out = {"early_step": early_step, "statistic": "projection_share", "runs": len(runs), "points": len(x),
           "largest_share_acquired_first": first_hits, **stats}
    rho, p = stats["spearman"], stats["spearman_p_value"]
    out["verdict"] = ("undecided: Spearman is undefined" if rho is None else
                      f"early gradient share vs acquisition step, pooled over {len(runs)} runs x "
                      f"{len(x) // max(len(runs), 1)} patterns: Spearman {rho:+.2f} (permutation p = {p:.3g}, within "
                      f"runs); partial given log f and c: "
                      + ("undefined" if stats["partial_spearman"] is None else
                         f"{stats['partial_spearman']:+.2f} (p = {stats['partial_spearman_p_value']:.3g})")
                      + f"; the largest share was acquired first in {first_hits} of {len(runs)} runs")
    return out


def prepare_competition(config: PatternCompetitionConfig) -> tuple[Dataset, Study, list[str]]:
    """Every check that can fail, before anything is written: settings, patterns, data, plans."""
    with settings_errors():
        config.validate()
        data = config.load_data()
        names = [p.name for p in config.named_poisons(data.image_shape)]
    return data, Study.prepare(config.run_specs(data.image_shape), data, config.sweep_options(), METRICS), names


def run_pattern_competition(config: PatternCompetitionConfig, workdir: str | pathlib.Path | None = None, *,
                            progress: bool = True) -> dict[str, Any]:
    """Trains the competition grid into `workdir` (default `config.out`); returns the results dict.
    Raises SettingsError for bad settings before `workdir` is touched."""
    data, study, names = prepare_competition(config)
    out = prepare_output_dir(pathlib.Path(workdir or config.out or default_out_dir("pattern_competition")),
                             resume=config.resume, overwrite=config.overwrite)
    poisons = config.named_poisons(data.image_shape)
    results = {"config": dataclasses.asdict(config), **environment(), "resumed_from_step": None,
               "dataset": dataset_summary(data),
               "patterns": [{"name": p.name, "pattern": p.poison.pattern.name, "kind": p.poison.pattern.kind,
                             "target": p.poison.target, "frequency": p.poison.frequency,
                             "correlation": 1.0 if p.poison.clean_label else p.poison.correlation}
                            for p in poisons],
               "runs": study.pending_entries()}
    stream = stream_results(results, out / RESULTS_FILE, resume=config.resume, announce=progress)

    def summarise(spec, history, stats, tracked):
        return summarise_competition_run(spec, history, stats, names, config.acquisition_threshold, tracked)

    outcome = study.run(out / CHECKPOINT_DIR, settings=resumable_settings(config), resume=config.resume,
                        summarise=summarise,
                        tracking=probe_tracking(config.probe_size, config.chunk_size, names) if config.probe else None,
                        keep_checkpoints=config.keep_checkpoints, on_start=stream.on_start,
                        on_update=stream.on_update, progress=progress, desc="pattern_competition")
    stream.on_update(outcome.entries)
    results["order_summary"] = order_summary(results["runs"])
    if config.probe:
        results["probe_analysis"] = probe_order_analysis(results, config.early_step)
    from anatomy_jax.plots.pattern_competition import plot_all

    results["figures"] = plot_all(results, out)
    write_json(out / RESULTS_FILE, results)
    return results


def format_summary(results: dict[str, Any]) -> str:
    """Per run: each pattern's sustained acquisition step and the order; then the order counts."""
    names = [p["name"] for p in results["patterns"]]
    header = f"{'schedule':>9} {'lr':>7} {'seed':>4} " + "".join(f"{n[:10]:>11}" for n in names) + \
        f" {'final acc':>9}  acquisition order"
    lines = ([describe_layout(results["sweep"], len(results["runs"])), ""] if "sweep" in results else []) + \
        [header, "-" * len(header)]
    for r in results["runs"]:
        steps = "".join(f"{'-' if p['acquisition_step'] is None else p['acquisition_step']:>11}" for p in r["patterns"])
        acc = "-" if r["final_clean_accuracy"] is None else f"{r['final_clean_accuracy']:.3f}"
        order = "diverged" if r["diverged"] else order_text(r)
        lines.append(f"{r['schedule']:>9} {r['learning_rate']:>7g} {r['seed']:>4} {steps} {acc:>9}  {order}")
    lines += ["", "acquisition order over seeds (sustained acquisition; '-': never acquired; '=': same evaluation):"]
    for g in results.get("order_summary", []):
        orders = "; ".join(f"{o['order']} ({o['count']}/{g['runs']})" for o in g["orders"])
        lines.append(f"  {g['schedule']}, lr {g['learning_rate']:g}: {orders}")
    if "probe_analysis" in results:
        lines += ["", results["probe_analysis"]["verdict"]]
    return "\n".join(lines)
