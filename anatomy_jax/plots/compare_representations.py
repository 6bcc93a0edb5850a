"""Figures of the representation comparison, drawn from its results dict (one PNG each)."""

from __future__ import annotations

import pathlib
from typing import Any

import numpy as np

from anatomy_jax.plots.figure import subplots
from anatomy_jax.utils.serialize import matrix_from_json

TITLES = {"cka": "linear CKA", "svcca": "SVCCA", "pwcca": "PWCCA (row's weights)", "procrustes": "Procrustes distance",
          "r2": "R² of the ridge map row → column", "stitched_accuracy": "stitched accuracy (row → column)",
          "conv_stitched_accuracy": "stitched accuracy, 1x1-conv map", "trained_stitched_accuracy":
          "stitched accuracy, trained map", "input_gradient_cosine": "input-gradient cosine",
          "transfer": "adversarial transfer rate (crafted on row)", "error": "error of column on row's PGD examples"}


def heatmap(matrix: np.ndarray, names: list[str], title: str, path: pathlib.Path, *, vmin: float | None = None,
            vmax: float | None = None, cmap: str = "viridis") -> None:
    """An M x M matrix with row/column net names and each value written in its cell."""
    m = len(names)
    fig, ax = subplots(figsize=(1.0 + 0.55 * m, 0.8 + 0.5 * m), layout="constrained")
    image = ax.imshow(np.ma.masked_invalid(matrix), vmin=vmin, vmax=vmax, cmap=cmap)
    ax.set_xticks(range(m), names, rotation=90, fontsize=7)
    ax.set_yticks(range(m), names, fontsize=7)
    if m <= 16:
        for i in range(m):
            for j in range(m):
                if np.isfinite(matrix[i, j]):
                    light = image.norm(matrix[i, j]) > 0.6 if cmap != "viridis_r" else image.norm(matrix[i, j]) < 0.4
                    ax.text(j, i, f"{matrix[i, j]:.2f}", ha="center", va="center", fontsize=5.5,
                            color="k" if light else "w")
    ax.set_title(title, fontsize=9)
    fig.colorbar(image, ax=ax, shrink=0.8)
    fig.savefig(path, dpi=120)


def plot_similarity_vs_transfer(results: dict[str, Any], depth: str, path: pathlib.Path) -> None:
    """One panel per metric: similarity of each ordered pair vs its transfer rate, with Spearman rho;
    same-architecture pairs highlighted."""
    d = results["depths"][depth]
    transfer = matrix_from_json(results["adversarial"]["transfer"])
    archs = [n["architecture"] for n in results["nets"]]
    metrics = list(d["spearman_vs_transfer"])
    cols = min(len(metrics), 4)
    rows = -(-len(metrics) // cols)
    fig, axes = subplots(rows, cols, figsize=(3.6 * cols, 3.4 * rows), squeeze=False, layout="constrained")
    for ax in axes.ravel()[len(metrics):]:
        ax.set_visible(False)
    axes = axes.ravel()[None, :]
    off = ~np.eye(len(archs), dtype=bool)
    same = np.array([[a == b for b in archs] for a in archs]) & off
    for ax, metric in zip(axes[0], metrics):
        s = matrix_from_json(d[metric])
        ax.scatter(s[off & ~same], transfer[off & ~same], s=12, alpha=0.7, label="different architecture")
        ax.scatter(s[same], transfer[same], s=18, alpha=0.9, marker="^", label="same architecture")
        corr = d["spearman_vs_transfer"][metric]
        rho, p = corr["spearman"], corr.get("p_value")
        ax.set_title(f"{metric}: ρ = {'-' if rho is None else f'{rho:.2f}'}"
                     + ("" if p is None else f" (Mantel p={p:.2g})"), fontsize=8)
        ax.set_xlabel(TITLES[metric], fontsize=8)
        ax.set_ylabel("transfer rate")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.suptitle(f"representation similarity (depth {depth}) vs adversarial transfer", fontsize=10)
    fig.savefig(path, dpi=120)


def plot_same_vs_cross(results: dict[str, Any], depth: str, path: pathlib.Path) -> None:
    """Per metric, per architecture: mean over same-architecture (different-seed) pairs vs mean
    over different-architecture pairs (the ResNeXt claim)."""
    d = results["depths"][depth]
    panels = {**d["same_vs_cross"], "transfer": results["same_vs_cross_transfer"]}
    cols = min(len(panels), 5)
    rows = -(-len(panels) // cols)
    fig, axes = subplots(rows, cols, figsize=(3.4 * cols, 3.2 * rows), squeeze=False, layout="constrained")
    for ax in axes.ravel()[len(panels):]:
        ax.set_visible(False)
    for ax, (metric, per_arch) in zip(axes.ravel(), panels.items()):
        archs = [a for a in per_arch if a != "all"]
        x = np.arange(len(archs))
        for offset, kind in ((-0.2, "same"), (0.2, "cross")):
            values = [np.nan if per_arch[a][kind] is None else per_arch[a][kind] for a in archs]
            ax.bar(x + offset, values, 0.4, label="same arch, other seed" if kind == "same" else "other arch")
        ax.set_xticks(x, [a + ("" if per_arch[a].get("p_value") is None else f"\np={per_arch[a]['p_value']:.2g}")
                          for a in archs], rotation=30, fontsize=7)
        ax.set_title(metric, fontsize=9)
        ax.grid(alpha=0.3, axis="y")
    axes.ravel()[0].legend(fontsize=7)
    fig.suptitle(f"same architecture vs different architecture (depth {depth}; p: permutation over net labels)",
                 fontsize=10)
    fig.savefig(path, dpi=120)


def plot_all(results: dict[str, Any], out: pathlib.Path) -> list[str]:
    """Writes every figure into `out`; returns the file names."""
    names = [n["name"] for n in results["nets"]]
    files = []
    bounds = {"cka": (0, 1), "svcca": (0, 1), "pwcca": (0, 1), "procrustes": (0, None), "r2": (None, 1),
              "stitched_accuracy": (0, 1), "conv_stitched_accuracy": (0, 1), "trained_stitched_accuracy": (0, 1)}
    for depth, d in results["depths"].items():
        for metric, (vmin, vmax) in bounds.items():
            name = f"{metric}_depth{depth}.png"
            heatmap(matrix_from_json(d[metric]), names, f"{TITLES[metric]} at depth {depth}", out / name, vmin=vmin,
                    vmax=vmax, cmap="viridis_r" if metric == "procrustes" else "viridis")
            files.append(name)
    if "input_gradients" in results:
        heatmap(matrix_from_json(results["input_gradients"]["cosine"]), names, TITLES["input_gradient_cosine"],
                out / "input_gradient_cosine.png", vmin=None, vmax=1)
        files.append("input_gradient_cosine.png")
    for key in ("transfer", "error"):
        name = f"adversarial_{key}.png"
        heatmap(matrix_from_json(results["adversarial"][key]), names, TITLES[key], out / name, vmin=0, vmax=1,
                cmap="magma")
        files.append(name)
    penultimate = max(results["depths"], key=float)
    plot_similarity_vs_transfer(results, penultimate, out / "similarity_vs_transfer.png")
    plot_same_vs_cross(results, penultimate, out / "same_vs_cross_architecture.png")
    return files + ["similarity_vs_transfer.png", "same_vs_cross_architecture.png"]
