"""Figures of the pattern-rate study, drawn from its results dict (never from live state)."""

from __future__ import annotations

import pathlib
import warnings
from collections import defaultdict
from typing import Any

import matplotlib
import numpy as np

from anatomy_jax.plots.figure import subplots
from anatomy_jax.utils.serialize import matrix_from_json


def _curve_stats(runs: list[dict], key: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Steps and the mean/min/max over runs (seeds) of a per-step curve; None counts as NaN."""
    steps = np.asarray(runs[0]["steps"])
    values = matrix_from_json([r[key] for r in runs])
    with warnings.catch_warnings():  # all-None columns (diverged runs) are NaN on purpose
        warnings.simplefilter("ignore", RuntimeWarning)
        return steps, np.nanmean(values, 0), np.nanmin(values, 0), np.nanmax(values, 0)


def _by(runs: list[dict], *keys: str) -> dict[tuple, list[dict]]:
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in runs:
        groups[tuple(r[k] for k in keys)].append(r)
    return dict(groups)


def plot_curves(results: dict[str, Any], path: pathlib.Path) -> None:
    """ASR (top) and clean accuracy (bottom) over steps, one column per learning rate; mean over
    seeds with the min-max band."""
    runs = results["runs"]
    lrs = sorted({r["learning_rate"] for r in runs})
    combos = sorted({(r["frequency"], r["correlation"]) for r in runs})
    colors = matplotlib.colormaps["viridis"](np.linspace(0, 0.9, max(len(combos), 1)))
    fig, axes = subplots(2, len(lrs), figsize=(4.5 * len(lrs), 7), squeeze=False, sharex=True)
    groups = _by(runs, "learning_rate", "frequency", "correlation")
    for col, lr in enumerate(lrs):
        for color, (f, c) in zip(colors, combos):
            group = groups.get((lr, f, c))
            if not group:
                continue
            for row, key in enumerate(("attack_success_rate", "clean_accuracy")):
                steps, mean, lo, hi = _curve_stats(group, key)
                ax = axes[row, col]
                ax.plot(steps, mean, color=color, label=f"f={f:g}, c={c:g}")
                ax.fill_between(steps, lo, hi, color=color, alpha=0.2, linewidth=0)
        axes[0, col].set_title(f"learning rate {lr:g}")
        axes[0, col].set_ylabel("attack success rate")
        axes[1, col].set_ylabel("clean test accuracy")
        axes[1, col].set_xlabel("step")
        for row in range(2):
            axes[row, col].set_ylim(-0.02, 1.02)
            axes[row, col].grid(alpha=0.3)
    axes[0, -1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.suptitle(f"{results['config']['model']} on {results['dataset']['name']}: pattern acquisition")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def plot_acquisition(results: dict[str, Any], path: pathlib.Path) -> None:
    """Heatmap of the acquisition step over frequency x correlation, one panel per learning rate.

    A cell is the mean over seeds; it reads "never" when no seed reached the threshold within the
    run, and gets a "*" when only some seeds did."""
    runs = results["runs"]
    lrs = sorted({r["learning_rate"] for r in runs})
    freqs = sorted({r["frequency"] for r in runs})
    corrs = sorted({r["correlation"] for r in runs})
    groups = _by(runs, "learning_rate", "frequency", "correlation")
    max_step = max((max(r["steps"]) for r in runs if r["steps"]), default=1)
    fig, axes = subplots(1, len(lrs), figsize=(1.3 * len(corrs) * len(lrs) + 3, 0.7 * len(freqs) + 2),
                             squeeze=False, layout="constrained")
    for ax, lr in zip(axes[0], lrs):
        grid = np.full((len(freqs), len(corrs)), np.nan)
        labels = np.full((len(freqs), len(corrs)), "", dtype=object)
        for i, f in enumerate(freqs):
            for j, c in enumerate(corrs):
                group = groups.get((lr, f, c), [])
                acquired = [r["acquisition_step"] for r in group if r["acquisition_step"] is not None]
                if not group:
                    continue
                if not acquired:
                    labels[i, j] = "diverged" if all(r["diverged"] for r in group) else "never"
                    continue
                grid[i, j] = float(np.mean(acquired))
                labels[i, j] = f"{grid[i, j]:.0f}" + ("*" if len(acquired) < len(group) else "")
        image = ax.imshow(np.ma.masked_invalid(grid), cmap="magma_r", vmin=0, vmax=max_step, origin="lower",
                          aspect="auto")
        ax.set_facecolor("0.85")
        for i in range(len(freqs)):
            for j in range(len(corrs)):
                ax.text(j, i, labels[i, j], ha="center", va="center", fontsize=8,
                        color="white" if np.isfinite(grid[i, j]) and grid[i, j] > 0.6 * max_step else "black")
        ax.set_xticks(range(len(corrs)), [f"{c:g}" for c in corrs])
        ax.set_yticks(range(len(freqs)), [f"{f:g}" for f in freqs])
        ax.set_xlabel("correlation c")
        ax.set_ylabel("frequency f")
        ax.set_title(f"learning rate {lr:g}")
    fig.colorbar(image, ax=axes[0].tolist(), label="acquisition step (ASR >= threshold)")
    fig.savefig(path, dpi=120)


def plot_all(results: dict[str, Any], out: str | pathlib.Path) -> list[str]:
    """Writes curves.png and acquisition.png into `out`; returns their file names."""
    out = pathlib.Path(out)
    if not results["runs"]:
        return []
    plot_curves(results, out / "curves.png")
    plot_acquisition(results, out / "acquisition.png")
    return ["curves.png", "acquisition.png"]
