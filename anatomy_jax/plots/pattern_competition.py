"""Figures of the pattern-competition study, drawn from its results dict."""

from __future__ import annotations

import pathlib
import warnings
from collections import defaultdict
from typing import Any

import matplotlib
import numpy as np

from anatomy_jax.plots.figure import subplots
from anatomy_jax.utils.serialize import matrix_from_json


def _panels(runs: list[dict]) -> tuple[list[str], list[float], dict[tuple, list[dict]]]:
    schedules = list(dict.fromkeys(r["schedule"] for r in runs))
    lrs = sorted({r["learning_rate"] for r in runs})
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in runs:
        groups[(r["schedule"], r["learning_rate"])].append(r)
    return schedules, lrs, groups


def _pattern_curve(group: list[dict], k: int, key: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    steps = np.asarray(group[0]["steps"])
    values = matrix_from_json([r["patterns"][k][key] for r in group])
    with warnings.catch_warnings():  # all-None columns (diverged runs) are NaN on purpose
        warnings.simplefilter("ignore", RuntimeWarning)
        return steps, np.nanmean(values, 0), np.nanmin(values, 0), np.nanmax(values, 0)


def plot_curves(results: dict[str, Any], path: pathlib.Path) -> None:
    """Per schedule (row) and learning rate (column): each pattern's ASR (solid, mean over seeds
    with the min-max band) and clean target rate (dotted); dashed verticals mark the decays."""
    runs = [r for r in results["runs"] if r.get("steps")]
    names = [p["name"] for p in results["patterns"]]
    schedules, lrs, groups = _panels(runs)
    colors = matplotlib.colormaps["tab10"](np.arange(len(names)) % 10)
    fig, axes = subplots(len(schedules), len(lrs), figsize=(4.6 * len(lrs) + 1.5, 3.4 * len(schedules)),
                         squeeze=False, sharex=True, sharey=True)
    for row, schedule in enumerate(schedules):
        for col, lr in enumerate(lrs):
            ax = axes[row, col]
            group = groups.get((schedule, lr), [])
            if not group:
                continue
            for k, (name, color) in enumerate(zip(names, colors)):
                steps, mean, lo, hi = _pattern_curve(group, k, "attack_success_rate")
                ax.plot(steps, mean, color=color, label=name)
                ax.fill_between(steps, lo, hi, color=color, alpha=0.2, linewidth=0)
                steps, mean, _, _ = _pattern_curve(group, k, "clean_target_rate")
                ax.plot(steps, mean, ":", color=color)
            for d in group[0]["decay_steps"]:
                ax.axvline(d, color="0.4", linestyle="--", linewidth=0.8)
            ax.set_title(f"{schedule} schedule, learning rate {lr:g}", fontsize=9)
            ax.set_ylim(-0.02, 1.02)
            ax.grid(alpha=0.3)
            if col == 0:
                ax.set_ylabel("ASR (solid), clean target rate (dotted)")
            if row == len(schedules) - 1:
                ax.set_xlabel("step")
    axes[0, -1].legend(fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5))
    seeds = len({r["seed"] for r in runs})
    fig.suptitle(f"competing patterns, {results['config']['model']} on {results['dataset']['name']} "
                 f"(mean of {seeds} seed{'s' if seeds > 1 else ''}, band: min-max; dashed: learning-rate decays)",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def plot_order(results: dict[str, Any], path: pathlib.Path) -> None:
    """Per schedule and learning rate: each pattern's sustained acquisition step in every seed
    (one marker per seed, seeds joined by thin lines), runs that never acquire on the "never" line."""
    runs = [r for r in results["runs"] if r.get("steps") and not r["diverged"]]
    names = [p["name"] for p in results["patterns"]]
    schedules, lrs, groups = _panels(runs)
    max_step = max((max(r["steps"]) for r in runs), default=1)
    never = 1.1 * max_step
    fig, axes = subplots(len(schedules), len(lrs), figsize=(max(3.6 * len(lrs), 6), 3.2 * len(schedules) + 0.5),
                         squeeze=False, sharey=True)
    x = np.arange(len(names))
    seed_colors = matplotlib.colormaps["Dark2"](np.arange(8))
    for row, schedule in enumerate(schedules):
        for col, lr in enumerate(lrs):
            ax = axes[row, col]
            group = groups.get((schedule, lr), [])
            for i, r in enumerate(group):
                y = [never if p["acquisition_step"] is None else p["acquisition_step"] for p in r["patterns"]]
                offset = (i - (len(group) - 1) / 2) * 0.06
                ax.plot(x + offset, y, "o-", color=seed_colors[i % 8], linewidth=0.6, markersize=5,
                        label=f"seed {r['seed']}")
            for d in (group[0]["decay_steps"] if group else []):
                ax.axhline(d, color="0.4", linestyle="--", linewidth=0.8)
            ax.axhline(never, color="0.6", linestyle=":", linewidth=0.8)
            ax.text(-0.4, never, "never", fontsize=7, va="bottom", color="0.4")
            ax.set_xticks(x, names, fontsize=8)
            ax.set_xlim(-0.5, len(names) - 0.5)
            ax.set_title(f"{schedule}, lr {lr:g}", fontsize=9)
            ax.grid(alpha=0.3)
            if col == 0:
                ax.set_ylabel("sustained acquisition step")
    axes[0, -1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.suptitle("acquisition order per seed (lower: earlier; dashed: learning-rate decays)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def plot_all(results: dict[str, Any], out: str | pathlib.Path) -> list[str]:
    """Writes competition_curves.png and acquisition_order.png into `out`; returns their names."""
    out = pathlib.Path(out)
    if not any(r.get("steps") for r in results["runs"]):
        return []
    plot_curves(results, out / "competition_curves.png")
    plot_order(results, out / "acquisition_order.png")
    return ["competition_curves.png", "acquisition_order.png"]
