"""Figures of the weight-change study, drawn from its results dict."""

from __future__ import annotations

import pathlib
from typing import Any

import matplotlib
import numpy as np

from anatomy_jax.plots.figure import subplots
from anatomy_jax.utils.serialize import matrix_from_json


def _panels(n: int, width: float = 4.5, height: float = 3.6):
    fig, axes = subplots(1, n, figsize=(width * n, height), squeeze=False, layout="constrained")
    return fig, axes[0]


def plot_rwc_per_layer(results: dict[str, Any], path: pathlib.Path) -> None:
    """RWC of every layer over epochs (log scale), one panel per model, colour = depth."""
    models = results["models"]
    fig, axes = _panels(len(models))
    for ax, (name, m) in zip(axes, models.items()):
        rwc = matrix_from_json(m["mean_rwc"])
        colors = matplotlib.colormaps["viridis"](np.linspace(0, 1, len(rwc)))
        epochs = np.arange(1, rwc.shape[1] + 1)
        for row, color in zip(rwc, colors):
            ax.plot(epochs, row, color=color, linewidth=1)
        ax.set_yscale("log")
        ax.set_title(f"{name} ({len(rwc)} layers; dark = early)")
        ax.set_xlabel("epoch")
        ax.set_ylabel("relative weight change")
        ax.grid(alpha=0.3)
    fig.savefig(path, dpi=120)


def plot_rwc_by_depth(results: dict[str, Any], path: pathlib.Path) -> None:
    """Mean RWC of the early, middle and late third of the layers over epochs, per model."""
    models = results["models"]
    fig, axes = _panels(len(models))
    for ax, (name, m) in zip(axes, models.items()):
        rwc = matrix_from_json(m["mean_rwc"])
        epochs = np.arange(1, rwc.shape[1] + 1)
        for part, label in zip(np.array_split(rwc, 3), ("early", "middle", "late")):
            if len(part):
                ax.plot(epochs, np.nanmean(part, axis=0), label=label, marker="o", markersize=3)
        ax.set_yscale("log")
        ax.set_title(name)
        ax.set_xlabel("epoch")
        ax.set_ylabel("mean relative weight change")
        ax.legend()
        ax.grid(alpha=0.3)
    fig.savefig(path, dpi=120)


def plot_scree(results: dict[str, Any], path: pathlib.Path) -> None:
    """k-means SSE against k per model, the elbow marked."""
    models = {k: m for k, m in results["models"].items() if m["clusters"]}
    fig, axes = _panels(max(len(models), 1), 3.8, 3.2)
    for ax, (name, m) in zip(axes, models.items()):
        c = m["clusters"]
        ax.plot(c["ks"], c["sse"], marker="o")
        ax.axvline(c["k"], color="red", linestyle="--", label=f"elbow k = {c['k']}")
        ax.set_title(name)
        ax.set_xlabel("k")
        ax.set_ylabel("SSE")
        ax.legend()
        ax.grid(alpha=0.3)
    fig.savefig(path, dpi=120)


def plot_clusters(results: dict[str, Any], path: pathlib.Path) -> None:
    """Layers on the first two principal components of their RWC trajectories, coloured by cluster."""
    models = {k: m for k, m in results["models"].items() if m["clusters"]}
    fig, axes = _panels(max(len(models), 1), 5.0, 4.2)
    for ax, (name, m) in zip(axes, models.items()):
        c = m["clusters"]
        xy = np.asarray(c["pca"])
        ax.scatter(xy[:, 0], xy[:, 1], c=c["labels"], cmap="tab10", vmin=0, vmax=9, s=30)
        for (x, y), label in zip(xy, c["names"]):
            ax.annotate(label.rsplit("/", 1)[0], (x, y), fontsize=5, alpha=0.7)
        ev = c["explained_variance_ratio"] + [0.0, 0.0]
        ax.set_xlabel(f"PC1 ({ev[0]:.0%})")
        ax.set_ylabel(f"PC2 ({ev[1]:.0%})")
        ax.set_title(f"{name}: k = {c['k']}")
    fig.savefig(path, dpi=120)


def plot_all(results: dict[str, Any], out: str | pathlib.Path) -> list[str]:
    """Writes the four figures into `out`; returns their file names."""
    out = pathlib.Path(out)
    figures = {"rwc_per_layer.png": plot_rwc_per_layer, "rwc_by_depth.png": plot_rwc_by_depth,
               "scree.png": plot_scree, "clusters.png": plot_clusters}
    for name, plot in figures.items():
        plot(results, out / name)
    return list(figures)
