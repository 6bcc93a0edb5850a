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


VISIBILITY_AXES = ("pattern_kind", "patch_size", "alpha")
AXIS_FLAGS = {"pattern_kind": "patterns", "patch_size": "patch_sizes", "alpha": "alphas"}  # the config's grid axes
AXIS_LABELS = {"pattern_kind": "pattern kind", "patch_size": "patch size (px)", "alpha": "opacity / amplitude alpha",
               "frequency": "frequency f", "correlation": "correlation c", "learning_rate": "learning rate"}


def _values(runs: list[dict], key: str) -> list:
    """The distinct values of `key` over `runs`: numbers sorted, names in the order the grid lists them."""
    values = list(dict.fromkeys(r.get(key) for r in runs))
    return values if any(isinstance(v, str) for v in values) else sorted(values, key=lambda v: (v is not None, v or 0))


def _cells(runs: list[dict]) -> list[tuple]:
    """The distinct visibility cells (kind, size, alpha) in the order the grid lists them."""
    return list(dict.fromkeys(tuple(r.get(a) for a in VISIBILITY_AXES) for r in runs))


def _cell_label(cell: tuple) -> str:
    kind, size, alpha = cell
    return f"{kind}" + (f" {size}px" if size is not None else "") + (f" alpha={alpha:g}" if alpha is not None else "")


def _acquisition(run: dict) -> float | None:
    """A run's sustained acquisition step (None: never, or diverged)."""
    return None if run["diverged"] else run["acquisition_step"]


def plot_curves(results: dict[str, Any], path: pathlib.Path) -> None:
    """Per pattern look (row pair) and learning rate (column): ASR with the clean target rate
    (dashed, its baseline) on top, clean accuracy below; mean over seeds with the min-max band."""
    runs = results["runs"]
    lrs = _values(runs, "learning_rate")
    cells = _cells(runs)
    combos = sorted({(r["frequency"], r["correlation"]) for r in runs})
    one_c = len({c for _, c in combos}) == 1
    colors = matplotlib.colormaps["viridis"](np.linspace(0, 0.9, max(len(combos), 1)))
    fig, axes = subplots(2 * len(cells), len(lrs), figsize=(4.5 * len(lrs), 3.4 * 2 * len(cells)), squeeze=False,
                         sharex=True)
    groups = _by(runs, *VISIBILITY_AXES, "learning_rate", "frequency", "correlation")
    for v, cell in enumerate(cells):
        for col, lr in enumerate(lrs):
            top, bottom = axes[2 * v, col], axes[2 * v + 1, col]
            for color, (f, c) in zip(colors, combos):
                group = groups.get((*cell, lr, f, c))
                if not group:
                    continue
                label = f"f={f:g}" + ("" if one_c else f", c={c:g}")
                for ax, key, style in ((top, "attack_success_rate", "-"), (top, "clean_target_rate", ":"),
                                       (bottom, "clean_accuracy", "-")):
                    steps, mean, lo, hi = _curve_stats(group, key)
                    ax.plot(steps, mean, style, color=color, label=label if key == "attack_success_rate" else None)
                    if style == "-":
                        ax.fill_between(steps, lo, hi, color=color, alpha=0.2, linewidth=0)
            top.set_title(f"{_cell_label(cell)}, learning rate {lr:g}" if len(cells) > 1 else f"learning rate {lr:g}")
            top.set_ylabel("ASR (solid), clean target rate (dotted)")
            bottom.set_ylabel("clean test accuracy")
            bottom.set_xlabel("step")
            for ax in (top, bottom):
                ax.set_ylim(-0.02, 1.02)
                ax.grid(alpha=0.3)
    axes[0, -1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    seeds = len({r["seed"] for r in runs})
    fig.suptitle(f"{results['config']['model']} on {results['dataset']['name']}: pattern acquisition "
                 f"(mean of {seeds} seed{'s' if seeds > 1 else ''}, band: min-max)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def plot_acquisition(results: dict[str, Any], path: pathlib.Path) -> None:
    """Heatmap of the sustained acquisition step over frequency x correlation, one panel per
    learning rate (columns) and pattern look (rows); a single correlation (clean-label) is one column.

    A cell reads mean±sd over the seeds that acquired the pattern; "never" when none did within
    the run, and a "*" when only some did."""
    runs = results["runs"]
    lrs, freqs, corrs = (_values(runs, k) for k in ("learning_rate", "frequency", "correlation"))
    cells = _cells(runs)
    groups = _by(runs, *VISIBILITY_AXES, "learning_rate", "frequency", "correlation")
    max_step = max((max(r["steps"]) for r in runs if r["steps"]), default=1)
    fig, axes = subplots(len(cells), len(lrs), figsize=(1.5 * len(corrs) * len(lrs) + 3,
                                                        (0.6 * len(freqs) + 1.6) * len(cells)),
                         squeeze=False, layout="constrained")
    image = None
    for v, cell in enumerate(cells):
        for ax, lr in zip(axes[v], lrs):
            grid = np.full((len(freqs), len(corrs)), np.nan)
            labels = np.full((len(freqs), len(corrs)), "", dtype=object)
            for i, f in enumerate(freqs):
                for j, c in enumerate(corrs):
                    group = groups.get((*cell, lr, f, c), [])
                    if not group:
                        continue
                    acquired = [a for a in map(_acquisition, group) if a is not None]
                    if not acquired:
                        labels[i, j] = "diverged" if all(r["diverged"] for r in group) else "never"
                        continue
                    grid[i, j] = float(np.mean(acquired))
                    spread = f"±{np.std(acquired):.0f}" if len(acquired) > 1 else ""
                    labels[i, j] = f"{grid[i, j]:.0f}{spread}" + ("*" if len(acquired) < len(group) else "")
            image = ax.imshow(np.ma.masked_invalid(grid), cmap="magma_r", vmin=0, vmax=max_step, origin="lower",
                              aspect="auto")
            ax.set_facecolor("0.85")
            for i in range(len(freqs)):
                for j in range(len(corrs)):
                    ax.text(j, i, labels[i, j], ha="center", va="center", fontsize=7,
                            color="white" if np.isfinite(grid[i, j]) and grid[i, j] > 0.6 * max_step else "black")
            clean_label = results["config"].get("clean_label")
            ax.set_xticks(range(len(corrs)), ["clean-label" if clean_label else f"{c:g}" for c in corrs])
            ax.set_yticks(range(len(freqs)), [f"{f:g}" for f in freqs])
            ax.set_xlabel("correlation c" if not clean_label else "")
            ax.set_ylabel("frequency f")
            ax.set_title((f"{_cell_label(cell)}\n" if len(cells) > 1 else "") + f"learning rate {lr:g}", fontsize=9)
    fig.colorbar(image, ax=axes.ravel().tolist(), label="sustained acquisition step (mean over seeds)")
    fig.savefig(path, dpi=110)


def plot_axis(results: dict[str, Any], axis: str, path: pathlib.Path) -> None:
    """Sustained acquisition step against one visibility axis, a line per correlation, a panel
    per learning rate (columns) and frequency (rows): the median over seeds (and the other
    visibility axes) with the min-max range; runs that never acquire sit on the "never" line."""
    runs = [r for r in results["runs"] if r.get(axis) is not None]  # blend and noise have no patch size
    values, lrs, freqs, corrs = (_values(runs, k) for k in (axis, "learning_rate", "frequency", "correlation"))
    max_step = max((max(r["steps"]) for r in runs if r["steps"]), default=1)
    never = 1.1 * max_step
    colors = matplotlib.colormaps["plasma"](np.linspace(0, 0.8, max(len(corrs), 1)))
    groups = _by(runs, axis, "learning_rate", "frequency", "correlation")
    fig, axes = subplots(len(freqs), len(lrs), figsize=(max(4 * len(lrs), 6.5), 2.8 * len(freqs) + 0.6),
                         squeeze=False, sharex=True, sharey=True)
    x = np.arange(len(values))
    for row, f in enumerate(freqs):
        for col, lr in enumerate(lrs):
            ax = axes[row, col]
            for color, c in zip(colors, corrs):
                med, lo, hi = [], [], []
                for v in values:
                    steps = [never if a is None else a for a in map(_acquisition, groups.get((v, lr, f, c), []))]
                    med.append(np.median(steps) if steps else np.nan)
                    lo.append(min(steps) if steps else np.nan)
                    hi.append(max(steps) if steps else np.nan)
                med = np.asarray(med)
                ax.errorbar(x, med, yerr=[med - np.asarray(lo), np.asarray(hi) - med], color=color, marker="o",
                            capsize=3, label=f"c={c:g}")
            ax.axhline(never, color="0.5", linestyle="--", linewidth=0.8)
            ax.text(0, never, "never", fontsize=7, va="bottom", color="0.4")
            ax.set_xticks(x, [str(v) for v in values])
            ax.set_title(f"f={f:g}, learning rate {lr:g}", fontsize=9)
            ax.grid(alpha=0.3)
            if col == 0:
                ax.set_ylabel("sustained acquisition step")
            if row == len(freqs) - 1:
                ax.set_xlabel(AXIS_LABELS.get(axis, axis))
    axes[0, -1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.suptitle(f"acquisition vs {AXIS_LABELS.get(axis, axis)}\n(median over seeds, bars: min-max)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def plot_all(results: dict[str, Any], out: str | pathlib.Path) -> list[str]:
    """Writes curves.png, acquisition.png and acquisition_vs_<axis>.png for every visibility axis
    given with more than one value (`--patterns`, `--patch-sizes`, `--alphas`) into `out`; returns
    their file names."""
    out = pathlib.Path(out)
    runs = results["runs"]
    if not runs:
        return []
    plot_curves(results, out / "curves.png")
    plot_acquisition(results, out / "acquisition.png")
    names = ["curves.png", "acquisition.png"]
    for axis, flag in AXIS_FLAGS.items():
        if len(results["config"].get(flag) or ()) > 1 and len({r.get(axis) for r in runs}) > 1:
            plot_axis(results, axis, out / f"acquisition_vs_{axis}.png")
            names.append(f"acquisition_vs_{axis}.png")
    return names
