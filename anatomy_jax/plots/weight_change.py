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


def plot_rwc_by_group(results: dict[str, Any], path: pathlib.Path) -> None:
    """Mean RWC of each layer group (the papers' groups: ResNet blocks, VGG/AlexNet early/middle/late)
    over epochs, the band one standard deviation over seeds, one panel per model."""
    models = results["models"]
    fig, axes = _panels(len(models))
    for ax, (name, m) in zip(axes, models.items()):
        colors = matplotlib.colormaps["viridis"](np.linspace(0, 0.9, max(len(m["group_rwc"]), 1)))
        for (group, curve), color in zip(m["group_rwc"].items(), colors):
            mean = np.array([np.nan if v is None else v for v in curve], dtype=float)
            std = np.array([np.nan if v is None else v for v in m["group_rwc_std"][group]], dtype=float)
            epochs = np.arange(1, len(mean) + 1)
            ax.plot(epochs, mean, label=group, marker="o", markersize=3, color=color)
            ax.fill_between(epochs, np.clip(mean - std, 1e-12, None), mean + std, color=color, alpha=0.2)
        ax.set_yscale("log")
        ax.set_title(f"{name} ({len(m['runs'])} seed{'s' if len(m['runs']) > 1 else ''})")
        ax.set_xlabel("epoch")
        ax.set_ylabel("mean relative weight change")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.savefig(path, dpi=120)


def plot_scree(results: dict[str, Any], path: pathlib.Path) -> None:
    """k-means SSE against k per model, on the original matrix and its PCA reduction, elbows marked."""
    models = {k: m for k, m in results["models"].items() if m["clusters"]}
    fig, axes = _panels(max(len(models), 1), 3.8, 3.2)
    for ax, (name, m) in zip(axes, models.items()):
        for c, label, color in ((m["clusters"], "original", "C0"), (m.get("clusters_pca"), "PCA", "C1")):
            if not c:
                continue
            sse = np.asarray(c["sse"], dtype=float)
            ax.plot(c["ks"], sse / sse[0] if sse[0] > 0 else sse, marker="o", color=color,
                    label=f"{label}: elbow k = {c['k']}")
            ax.axvline(c["k"], color=color, linestyle="--")
        ax.set_title(name)
        ax.set_xlabel("k")
        ax.set_ylabel("SSE / SSE at k = 1")
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
    figures = {"rwc_per_layer.png": plot_rwc_per_layer, "rwc_by_group.png": plot_rwc_by_group,
               "scree.png": plot_scree, "clusters.png": plot_clusters}
    for name, plot in figures.items():
        plot(results, out / name)
    return list(figures)
