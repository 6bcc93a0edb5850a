"""Does the gradient explain pattern acquisition? (seed 000's hypothesis, made measurable)

Trains the pattern-rate grid (frequency x correlation x learning rate x seed) with a gradient
probe vmapped over the runs of each sweep (`SweepGradientProbe`: one program per evaluation),
on a probe batch weighted to the training set's real composition, so a group's share of the
batch gradient is the share SGD sees. It then asks whether early statistics of the patterned
images' gradients predict the sustained acquisition step across runs:

* Spearman's rho of each statistic at `early_step` with the acquisition step (never acquired =
  censored after the last step, tied at the top; diverged runs excluded), with the number of
  runs, a bootstrap confidence interval (resampling design cells) and a permutation p-value;
* the partial Spearman controlling for the design (log f, c and, when it varies, log lr), with
  its own interval and a Freedman-Lane permutation p-value: whether the gradient explains
  acquisition *beyond* frequency and correlation, rather than restating them.

`run_gradient_alignment(config, workdir)` runs what `experiments/gradient_alignment.py` runs.
"""

from __future__ import annotations

import dataclasses
import math
import pathlib
from typing import Any, ClassVar, Sequence

import jax
import numpy as np

from anatomy_jax.experiment.options import resumable_settings
from anatomy_jax.experiment.outputs import (CHECKPOINT_DIR, RESULTS_FILE, default_out_dir, environment,
                                            prepare_output_dir)
from anatomy_jax.experiment.pattern_rate import PatternRateConfig, prepare_study, summarise_run
from anatomy_jax.experiment.study import stream_results
from anatomy_jax.probes import GROUP_NAMES, SweepGradientProbe
from anatomy_jax.utils import flag
from anatomy_jax.utils.serialize import write_json
from anatomy_jax.utils.statistics import rank_association

SIGNIFICANCE = 0.05

# Early statistics tested as predictors: (results key, group index, layer: None = whole network,
# "first"/"last" = that layer alone, description). Group 1 holds the patterned images labelled with
# the target, the ones that teach the pattern-target link.
PREDICTORS = (
    ("projection_share", 1, None, "share of the training-set gradient along the patterned target-labelled images' "
                                  "gradient (at their real frequency)"),
    ("norm_share", 1, None, "norm share of the patterned target-labelled images in the training-set gradient"),
    ("update_share", 1, None, "share of the optimizer update (momentum included) along their gradient"),
    ("coherence", 1, None, "coherence alpha = |E g|^2 / E|g|^2 of their gradients (Chatterjee & Zielinski)"),
    ("mean_pairwise_cosine", 1, None, "mean pairwise cosine of their gradients"),
    ("mean_grad_norm", 1, None, "norm of their mean gradient"),
    ("projection_share", 1, "first", "projection share in the first layer alone"),
    ("projection_share", 1, "last", "projection share in the last layer alone"),
)


@dataclasses.dataclass(frozen=True)
class GradientAlignmentConfig(PatternRateConfig):
    """The pattern-rate settings plus the probe's; defaults finish in under 5 minutes on 2 CPU cores."""

    DEFAULT_CORRELATIONS: ClassVar[tuple[float, ...]] = (0.5, 1.0)

    correlations: tuple[float, ...] | None = flag(None, "correlations c = P(label = target | pattern) (default: "
                                                        "0.5,1; c = 0 is never acquired)")
    learning_rates: tuple[float, ...] = flag((0.02, 0.1), "base learning rates")
    steps: int = flag(400, "training steps per run")
    eval_every: int | None = flag(10, "evaluate and probe every this many steps")
    checkpoint_every: int = flag(0, "checkpoint every this many steps (0 = only at the end of each chunk)")
    early_step: int = flag(10, "the step whose probe values are used to predict acquisition (an evaluation step)")
    probe_size: int = flag(128, "training images in the probe batch (stratified by group, weighted back to the "
                                "training set's composition)")
    chunk_size: int = flag(32, "examples per chunk of per-example gradients")
    permutations: int = flag(2000, "permutations (and bootstrap resamples) behind each p-value and interval")

    def validate(self) -> None:
        super().validate()
        if len(self.visibility_cells()) > 1:
            raise ValueError("the gradient study probes one pattern look: give one --pattern, --patch-size and "
                             "--alpha (the partial correlation controls for f, c and lr only)")
        check_probe_settings(self.early_step, self.eval_interval, self.steps, self.probe_size, self.chunk_size)
        if self.permutations < 100:
            raise ValueError(f"permutations must be >= 100, got {self.permutations}")


def check_probe_settings(early_step: int, eval_interval: int, steps: int, probe_size: int, chunk_size: int) -> None:
    """ValueError unless `early_step` is an evaluation step and the probe sizes are usable."""
    if early_step <= 0 or early_step % eval_interval or early_step > steps:
        raise ValueError(f"early_step must be an evaluation step (a multiple of {eval_interval} up to {steps}), "
                         f"got {early_step}")
    if probe_size < 4 or chunk_size < 1:
        raise ValueError("probe_size must be >= 4 and chunk_size >= 1")


def probe_tracking(probe_size: int, chunk_size: int, pattern_names: Sequence[str] | None = None):
    """The `Study.run(tracking=...)` hook of the probe studies: one `SweepGradientProbe` per chunk,
    each run's probe batch drawn from its seed, records restored on resume."""
    def tracking(trainer, specs, prepared, params, restored):
        runs = [(p.data, jax.random.fold_in(jax.random.key(spec.seed), 7)) for spec, p in zip(specs, prepared)]
        return SweepGradientProbe(trainer, runs, probe_size=probe_size, chunk_size=chunk_size,
                                  pattern_names=pattern_names, records=restored)

    return tracking


def _probe_value(record: dict, key: str, group: int, layer: str | None) -> float:
    if layer is None:
        return float(record[key][group])
    layers = list(record["layers"])
    return float(record["layers"][layers[0] if layer == "first" else layers[-1]][key][group])


def design_covariates(runs: Sequence[dict]) -> tuple[np.ndarray, list[str]]:
    """The design the partial correlation controls for: log f, c and log lr (the columns that vary)."""
    columns = {"log_frequency": [math.log(r["frequency"]) for r in runs],
               "correlation": [r["correlation"] for r in runs],
               "log_learning_rate": [math.log(r["learning_rate"]) for r in runs]}
    used = [name for name, values in columns.items() if len(set(values)) > 1]
    return np.asarray([columns[n] for n in used], float).T.reshape(len(runs), len(used)), used


def analyse(results: dict[str, Any], early_step: int, steps: int, *, permutations: int = 2000) -> dict[str, Any]:
    """Each predictor at `early_step` against the sustained acquisition step across runs."""
    runs = [r for r in results["runs"] if not r["diverged"]]
    never = steps + 1  # censored: acquired (if ever) after the last step, tied at the top
    acquisition = [r["acquisition_step"] if r["acquisition_step"] is not None else never for r in runs]
    covariates, controls = design_covariates(runs)
    cells = [f"{r['frequency']}|{r['correlation']}|{r['learning_rate']}" for r in runs]
    out = {"early_step": early_step, "runs": len(runs), "diverged_excluded": len(results["runs"]) - len(runs),
           "never_acquired": sum(r["acquisition_step"] is None for r in runs), "never_acquired_value": never,
           "controls": controls, "significance": SIGNIFICANCE, "predictors": []}
    for key, group, layer, description in PREDICTORS:
        records = [next(p for p in r["probes"] if p["step"] == early_step) for r in runs]
        values = [_probe_value(rec, key, group, layer) for rec in records]
        layer_name = None if layer is None else list(records[0]["layers"])[0 if layer == "first" else -1] \
            if records else None
        stats = rank_association(values, acquisition, covariates if controls else None, clusters=cells,
                                 num_permutations=permutations, num_resamples=permutations, seed=0)
        out["predictors"].append({"statistic": key, "group": GROUP_NAMES[group], "layer": layer_name,
                                  "description": description, "values": values, "acquisition_steps": acquisition,
                                  **stats})
    return out


def _effect(rho: float | None, p: float | None) -> str:
    if rho is None or p is None:
        return "undefined"
    if p >= SIGNIFICANCE:
        return "not significant"
    return "predicts earlier acquisition" if rho < 0 else "opposite to the hypothesis"


def verdict(analysis: dict[str, Any]) -> str:
    """One sentence with numbers: the main predictor's Spearman and partial Spearman, and what they say."""
    main = analysis["predictors"][0]
    if main["spearman"] is None:
        return (f"undecided: Spearman is undefined over the {analysis['runs']} runs (the {main['statistic']} or the "
                f"acquisition step is constant; {analysis['never_acquired']} never acquired)")

    def fmt(name: str) -> str:
        rho, ci, p = main[name], main[f"{name}_ci"], main[f"{name}_p_value"]
        label = {"spearman": "Spearman", "partial_spearman": "partial Spearman"}[name]
        if rho is None:
            return f"{label} undefined"
        lo, hi = ("?" if v is None else f"{v:+.2f}" for v in ci)
        return f"{label} {rho:+.2f} (95% CI [{lo}, {hi}], permutation p = {p:.3g})"

    plain, partial = _effect(main["spearman"], main["spearman_p_value"]), \
        _effect(main["partial_spearman"], main["partial_spearman_p_value"])
    hypothesis = "predicts earlier acquisition"
    if plain == hypothesis and partial == hypothesis:
        conclusion = "the gradient predicts acquisition, also beyond the design"
    elif plain == hypothesis and partial == "undefined":
        conclusion = ("the gradient tracks acquisition; whether it adds anything beyond the design is undecided "
                      "(too few runs for the partial correlation)")
    elif plain == hypothesis and partial == "opposite to the hypothesis":
        conclusion = "the gradient tracks acquisition only through the design: given the design, the sign reverses"
    elif plain == hypothesis:
        conclusion = ("the gradient tracks acquisition but adds nothing significant beyond frequency and correlation "
                      "(it may restate the design)")
    elif partial == hypothesis:
        conclusion = "the gradient predicts acquisition only once the design is controlled for"
    elif plain == "opposite to the hypothesis":
        conclusion = "the hypothesis is contradicted on this grid (a larger share goes with later acquisition)"
    else:
        conclusion = "the hypothesis is not supported on this grid"
    controls = ", ".join(analysis["controls"]) or "nothing (the design does not vary)"
    return (f"{conclusion}: the {main['description']} at step {analysis['early_step']} vs the sustained acquisition "
            f"step over {analysis['runs']} runs ({analysis['never_acquired']} never acquired, "
            f"{analysis['diverged_excluded']} diverged excluded): {fmt('spearman')}; controlling for {controls}: "
            f"{fmt('partial_spearman')} (a larger share should mean earlier acquisition: a negative rho)")


def run_gradient_alignment(config: GradientAlignmentConfig, workdir: str | pathlib.Path | None = None, *,
                           progress: bool = True) -> dict[str, Any]:
    """Trains the grid with probes; writes results.json and the figures; returns the results."""
    data, study = prepare_study(config)
    out = prepare_output_dir(workdir or config.out or default_out_dir("gradient_alignment"), resume=config.resume,
                             overwrite=config.overwrite)
    results = {"config": dataclasses.asdict(config), **environment(), "group_names": list(GROUP_NAMES),
               "runs": study.pending_entries()}

    def summarise(spec, history, stats, probes):
        return {**summarise_run(spec, history, stats, threshold=config.acquisition_threshold), "probes": probes}

    stream = stream_results(results, out / RESULTS_FILE, resume=config.resume, announce=progress)
    outcome = study.run(out / CHECKPOINT_DIR, settings=resumable_settings(config), summarise=summarise,
                        tracking=probe_tracking(config.probe_size, config.chunk_size), resume=config.resume,
                        keep_checkpoints=1, on_start=stream.on_start,
                        on_update=stream.on_update, progress=progress, desc="gradient_alignment")
    results["runs"] = outcome.entries
    results["analysis"] = analyse(results, config.early_step, config.steps, permutations=config.permutations)
    results["verdict"] = verdict(results["analysis"])
    from anatomy_jax.plots.gradient_alignment import plot_all

    results["figures"] = plot_all(results, out)
    write_json(out / RESULTS_FILE, results)
    return results


def format_summary(results: dict[str, Any]) -> str:
    """Spearman and partial Spearman (with p-values) of every predictor, then the verdict."""
    def fmt(v, spec):
        return "-" if v is None else format(v, spec)

    header = (f"{'statistic (step %d)' % results['analysis']['early_step']:<28} {'layer':<16} {'Spearman':>8} "
              f"{'p':>7} {'partial':>8} {'p':>7}")
    lines = [header, "-" * len(header)]
    for p in results["analysis"]["predictors"]:
        lines.append(f"{p['statistic']:<28} {(p['layer'] or 'all')[:16]:<16} {fmt(p['spearman'], '+.2f'):>8} "
                     f"{fmt(p['spearman_p_value'], '.3f'):>7} {fmt(p['partial_spearman'], '+.2f'):>8} "
                     f"{fmt(p['partial_spearman_p_value'], '.3f'):>7}")
    return "\n".join(lines + ["", f"n = {results['analysis']['runs']} runs; partial: controlling for "
                              f"{', '.join(results['analysis']['controls']) or 'nothing'}", results["verdict"]])
