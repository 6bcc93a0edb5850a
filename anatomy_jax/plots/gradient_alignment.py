"""Figures of the gradient-alignment experiment, drawn from its results dict."""

from __future__ import annotations

import pathlib
from typing import Any

import matplotlib
import numpy as np

from anatomy_jax.plots.figure import subplots

_OVER_TIME = (
    ("attack_success_rate", None, "attack success rate"),
    ("projection_share", 1, "projection share (pattern -> target)"),
    ("norm_share", 1, "norm share (pattern -> target)"),
    ("coherence", 1, "coherence alpha (pattern -> target)"),
    ("mean_cosine", (1, 0), "cos(mean grad pattern -> target, mean grad clean)"),
    ("saliency_mass", None, "saliency mass inside the pattern"),
)


def _series(run: dict[str, Any], key: str, index) -> tuple[list[int], list[float]]:
    if key == "attack_success_rate":
        return run["steps"], [np.nan if v is None else v for v in run[key]]
    steps = [p["step"] for p in run["probes"]]
    if index is None:
        return steps, [p[key] for p in run["probes"]]
    if isinstance(index, tuple):
        return steps, [p[key][index[0]][index[1]] for p in run["probes"]]
    return steps, [p[key][index] for p in run["probes"]]


def plot_over_time(results: dict[str, Any], path: pathlib.Path) -> None:
    """ASR next to the probe statistics over steps; one row per learning rate, one line per (f, c)."""
    runs = results["runs"]
    lrs = sorted({r["learning_rate"] for r in runs})
    combos = sorted({(r["frequency"], r["correlation"]) for r in runs})
    colors = dict(zip(combos, matplotlib.colormaps["viridis"](np.linspace(0, 0.9, len(combos)))))
    fig, axes = subplots(len(lrs), len(_OVER_TIME), figsize=(3.4 * len(_OVER_TIME), 2.9 * len(lrs)),
                             squeeze=False, layout="constrained")
    for row, lr in enumerate(lrs):
        for col, (key, index, label) in enumerate(_OVER_TIME):
            ax = axes[row, col]
            for r in (r for r in runs if r["learning_rate"] == lr):
                steps, values = _series(r, key, index)
                ax.plot(steps, values, color=colors[(r["frequency"], r["correlation"])],
                        label=f"f={r['frequency']:g}, c={r['correlation']:g}" if r["seed"] == runs[0]["seed"] else None)
            ax.set_title(f"{label}\nlr {lr:g}", fontsize=8)
            ax.set_xlabel("step", fontsize=8)
            ax.tick_params(labelsize=7)
            ax.grid(alpha=0.3)
    axes[0, -1].legend(fontsize=6, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.savefig(path, dpi=110)


def plot_predictors(results: dict[str, Any], path: pathlib.Path) -> None:
    """Early statistic vs acquisition step across runs, one panel per statistic, Spearman and the
    partial Spearman (given the design) with permutation p-values in the title; runs that never
    acquired the pattern are hollow markers at steps + 1."""
    analysis = results["analysis"]
    steps = results["config"]["steps"]
    predictors = analysis["predictors"]
    cols = min(len(predictors), 4)
    rows = -(-len(predictors) // cols)
    fig, axes = subplots(rows, cols, figsize=(3.8 * cols, 3.6 * rows), squeeze=False, layout="constrained")
    for ax in axes.ravel()[len(predictors):]:
        ax.set_visible(False)
    for ax, p in zip(axes.ravel(), predictors):
        x = np.asarray(p["values"])
        y = np.asarray(p["acquisition_steps"])
        never = y > steps
        ax.scatter(x[~never], y[~never], color="C0", label="acquired")
        ax.scatter(x[never], y[never], facecolors="none", edgecolors="C3", label="never acquired")
        def fmt(name: str, p=p) -> str:
            rho, pv = p[name], p[f"{name}_p_value"]
            return "n/a" if rho is None else f"{rho:+.2f} (p={pv:.2g})"

        where = p["group"] + (f", {p['layer']}" if p.get("layer") else "")
        ax.set_title(f"{p['statistic']} ({where})\nSpearman {fmt('spearman')}\npartial {fmt('partial_spearman')}",
                     fontsize=7)
        ax.set_xlabel(f"value at step {analysis['early_step']}", fontsize=8)
        ax.set_ylabel("acquisition step", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=7)
    fig.suptitle(f"early gradient statistics vs sustained acquisition ({analysis['runs']} runs)", fontsize=9)
    fig.savefig(path, dpi=110)


def plot_all(results: dict[str, Any], out: str | pathlib.Path) -> list[str]:
    out = pathlib.Path(out)
    plot_over_time(results, out / "alignment_over_time.png")
    plot_predictors(results, out / "alignment_vs_acquisition.png")
    return ["alignment_over_time.png", "alignment_vs_acquisition.png"]
