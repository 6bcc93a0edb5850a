"""Does the gradient explain pattern acquisition? (seed 000's hypothesis, made measurable)

Trains the pattern-rate grid (frequency x correlation x learning rate x seed) with a
`GradientProbe` observer, and asks whether early-training gradient statistics of the patterned
images predict how fast the pattern is acquired: the Spearman rank correlation across runs
between each statistic at `early_step` and the acquisition step (runs that never acquire the
pattern count as acquired right after the last step). `run_gradient_alignment(config, workdir)`
runs what `experiments/gradient_alignment.py` runs.
"""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Any

import jax
import numpy as np
from scipy.stats import spearmanr

from anatomy_jax.experiment.options import resumable_settings
from anatomy_jax.experiment.outputs import (CHECKPOINT_DIR, RESULTS_FILE, default_out_dir, environment,
                                            prepare_output_dir)
from anatomy_jax.utils.serialize import write_json
from anatomy_jax.experiment.pattern_rate import PatternRateConfig, prepare_study, summarise_run
from anatomy_jax.experiment.study import stream_results
from anatomy_jax.probes import GROUP_NAMES, GradientProbe

# Early statistics tested as predictors: (results key, group index, description). Group 1 holds
# the patterned images labelled with the target, the ones that teach the pattern-target link.
PREDICTORS = (
    ("projection_share", 1, "projection share of patterned target-labelled images in the batch gradient"),
    ("norm_share", 1, "norm share of patterned target-labelled images in the batch gradient"),
    ("update_share", 1, "share of the optimizer update (momentum included) along their summed gradient"),
    ("coherence", 1, "coherence (mean pairwise cosine) of their gradients"),
    ("mean_grad_norm", 1, "norm of their mean gradient"),
)


@dataclasses.dataclass(frozen=True)
class GradientAlignmentConfig(PatternRateConfig):
    """The pattern-rate settings plus the probe's; defaults finish in a few minutes on 2 CPU cores."""

    frequencies: tuple[float, ...] = dataclasses.field(default=(0.01, 0.03, 0.1), metadata={
        "help": "pattern frequencies f"})
    correlations: tuple[float, ...] = dataclasses.field(default=(0.5, 1.0), metadata={
        "help": "correlations c = P(label = target | pattern)"})
    learning_rates: tuple[float, ...] = dataclasses.field(default=(0.01, 0.05), metadata={
        "help": "base learning rates"})
    steps: int = dataclasses.field(default=300, metadata={"help": "training steps per run"})
    eval_every: int | None = dataclasses.field(default=10, metadata={
        "help": "evaluate and probe every this many steps"})
    checkpoint_every: int = dataclasses.field(default=0, metadata={"help": "checkpoint every this many steps (0 = only at the end of each chunk)"})
    early_step: int = dataclasses.field(default=10, metadata={
        "help": "the step whose probe values are used to predict acquisition (must be an evaluation step)"})
    probe_size: int = dataclasses.field(default=256, metadata={
        "help": "training images in the probe batch (half of them patterned)"})
    chunk_size: int = dataclasses.field(default=32, metadata={"help": "examples per chunk of per-example gradients"})

    def validate(self) -> None:
        super().validate()
        if self.early_step <= 0 or self.early_step % self.eval_interval or self.early_step > self.steps:
            raise ValueError(f"early_step must be an evaluation step (a multiple of {self.eval_interval} "
                             f"up to {self.steps}), got {self.early_step}")
        if self.probe_size < 4 or self.chunk_size < 1:
            raise ValueError("probe_size must be >= 4 and chunk_size >= 1")


def spearman(x: list[float], y: list[float]) -> float | None:
    """Spearman rank correlation, or None when it is undefined (constant input, < 3 points)."""
    if len(x) < 3 or len(set(x)) < 2 or len(set(y)) < 2:
        return None
    rho = spearmanr(x, y).statistic
    return None if not np.isfinite(rho) else float(rho)


def analyse(results: dict[str, Any], early_step: int, steps: int) -> dict[str, Any]:
    """Spearman correlation between each early statistic and the acquisition step across runs."""
    runs = [r for r in results["runs"] if not r["diverged"]]
    acquisition = [r["acquisition_step"] if r["acquisition_step"] is not None else steps + 1 for r in runs]
    out = {"early_step": early_step, "runs": len(runs), "never_acquired": sum(r["acquisition_step"] is None
                                                                              for r in runs), "predictors": []}
    for key, group, description in PREDICTORS:
        values = []
        for r in runs:
            record = next(p for p in r["probes"] if p["step"] == early_step)
            values.append(float(record[key][group]))
        out["predictors"].append({"statistic": key, "group": GROUP_NAMES[group], "description": description,
                                  "values": values, "acquisition_steps": acquisition,
                                  "spearman": spearman(values, acquisition)})
    return out


def verdict(analysis: dict[str, Any]) -> str:
    """One sentence with numbers: does the main predictor (projection share) anticipate acquisition?"""
    main = analysis["predictors"][0]
    rho = main["spearman"]
    if rho is None:
        return f"undecided: the {main['description']} is constant across the {analysis['runs']} runs"
    holds = rho <= -0.5
    return (f"{'hypothesis holds' if holds else 'hypothesis not supported'} on this grid: the {main['description']} "
            f"at step {analysis['early_step']} predicts the acquisition step with Spearman {rho:+.2f} over "
            f"{analysis['runs']} runs ({analysis['never_acquired']} never acquired; a larger share should mean "
            f"earlier acquisition, i.e. a negative correlation)")


def run_gradient_alignment(config: GradientAlignmentConfig, workdir: str | pathlib.Path | None = None, *,
                           progress: bool = True) -> dict[str, Any]:
    """Trains the grid with probes; writes results.json and the figures; returns the results."""
    data, study = prepare_study(config)
    out = prepare_output_dir(workdir or config.out or default_out_dir("gradient_alignment"), resume=config.resume,
                             overwrite=config.overwrite)
    results = {"config": dataclasses.asdict(config), **environment(), "group_names": list(GROUP_NAMES),
               "runs": study.pending_entries()}

    def tracking(trainer, specs, prepared, params, restored):
        probes = [GradientProbe(trainer, p.data, jax.random.fold_in(jax.random.key(spec.seed), 7),
                                probe_size=config.probe_size, chunk_size=config.chunk_size)
                  for spec, p in zip(specs, prepared)]
        for probe, records in zip(probes, restored or []):  # a resumed chunk keeps its probe values
            probe.history = list(records)
        return probes

    def summarise(spec, history, stats, probes):
        return {**summarise_run(spec, history, stats, threshold=config.acquisition_threshold), "probes": probes}

    stream = stream_results(results, out / RESULTS_FILE, resume=config.resume, announce=progress)
    outcome = study.run(out / CHECKPOINT_DIR, settings=resumable_settings(config), summarise=summarise,
                        tracking=tracking, resume=config.resume, keep_checkpoints=1, on_start=stream.on_start,
                        on_update=stream.on_update, progress=progress, desc="gradient_alignment")
    results["runs"] = outcome.entries
    results["analysis"] = analyse(results, config.early_step, config.steps)
    results["verdict"] = verdict(results["analysis"])
    from anatomy_jax.plots.gradient_alignment import plot_all

    results["figures"] = plot_all(results, out)
    write_json(out / RESULTS_FILE, results)
    return results


def format_summary(results: dict[str, Any]) -> str:
    """Spearman of every predictor, then the verdict."""
    lines = [f"{'statistic (step %d)' % results['analysis']['early_step']:<28} {'group':<15} {'Spearman':>8}"]
    for p in results["analysis"]["predictors"]:
        rho = "-" if p["spearman"] is None else f"{p['spearman']:+.2f}"
        lines.append(f"{p['statistic']:<28} {p['group']:<15} {rho:>8}")
    return "\n".join(lines + ["", results["verdict"]])
