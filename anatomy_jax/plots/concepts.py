"""Figures of the concept studies: Net2Vec IoUs, concept embeddings, over time; similarity overlays.

Drawn from results dicts (and, for overlays, the saved arrays) only; no pyplot, no backend.
"""

from __future__ import annotations

import pathlib
from typing import Any, Sequence

import numpy as np
from matplotlib.figure import Figure

from anatomy_jax.plots.figure import subplots


def _nan(v: float | None) -> float:
    return np.nan if v is None else float(v)


def concept_iou_figure(results: dict[str, Any]) -> Figure:
    """Per layer, each concept's best single filter IoU vs the learned combination's (bars)."""
    layers, names = results["layers"], list(results["concepts"])
    fig, axes = subplots(1, len(layers), figsize=(4.5 * len(layers), 3.6), squeeze=False, layout="constrained")
    x = np.arange(len(names))
    for ax, layer in zip(axes[0], layers):
        single = [_nan(results["concepts"][n][layer]["single_filter_iou"]) for n in names]
        comb = [_nan(results["concepts"][n][layer]["combination_iou"]) for n in names]
        ax.bar(x - 0.2, single, 0.4, label="best single filter")
        ax.bar(x + 0.2, comb, 0.4, label="learned combination")
        for i, n in enumerate(names):
            k = results["concepts"][n][layer]["filters_for_90"]
            if k is not None:
                ax.text(i + 0.2, _nan(comb[i]) + 0.01 if np.isfinite(comb[i]) else 0.01, str(k), ha="center",
                        fontsize=7)
        ax.set_xticks(x, names, rotation=45, ha="right")
        ax.set_ylim(0, 1)
        ax.set_title(f"{layer} (numbers: filters for 90 %)")
        ax.set_ylabel("set IoU (test)")
    axes[0][0].legend(fontsize=8)
    return fig


def concept_embeddings_figure(results: dict[str, Any]) -> Figure:
    """Cosine similarity of the concept embeddings, one matrix per layer."""
    emb = results["embeddings"]
    layers, names = list(emb["cosine"]), emb["names"]
    fig, axes = subplots(1, len(layers), figsize=(4.2 * len(layers), 3.8), squeeze=False, layout="constrained")
    for ax, layer in zip(axes[0], layers):
        m = np.array([[_nan(v) for v in row] for row in emb["cosine"][layer]])
        im = ax.imshow(m, vmin=-1, vmax=1, cmap="RdBu_r")
        ax.set_xticks(range(len(names)), names, rotation=90, fontsize=7)
        ax.set_yticks(range(len(names)), names, fontsize=7)
        ax.set_title(f"{layer}: embedding cosine")
    fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8)
    return fig


def concept_over_time_figure(results: dict[str, Any]) -> Figure:
    """The planted concept's IoU per layer and the trigger's ASR over training steps (from step 0,
    the untrained net; symlog steps so the early points show), the natural control's beside them
    (grey / faint)."""
    series = results["over_time"]
    steps = [p["step"] for p in series]
    fig, ax = subplots(1, 1, figsize=(7, 4), layout="constrained")
    curves = results.get("curves", {})
    if "backdoored" in curves:
        c = curves["backdoored"]
        ax.plot(c["steps"], [_nan(v) for v in c["attack_success_rate"]], "k-", lw=1, label="trigger ASR")
        ax.plot(c["steps"], [_nan(v) for v in c["clean_accuracy"]], "k:", lw=1, label="clean accuracy")
    else:
        ax.plot(steps, [_nan(p["attack_success_rate"]) for p in series], "k-", label="trigger ASR")
        ax.plot(steps, [_nan(p["clean_accuracy"]) for p in series], "k:", label="clean accuracy")
    if "natural" in curves:
        ax.plot(curves["natural"]["steps"], [_nan(v) for v in curves["natural"]["attack_success_rate"]], "-",
                color="0.6", lw=1, label="trigger ASR, natural control")

    def iou(p: dict, layer: str, kind: str) -> float:
        v = p["layers"].get(layer)
        return _nan(v[kind]) if v else np.nan

    for i, layer in enumerate(results["layers"]):
        colour = f"C{i}"
        ax.plot(steps, [iou(p, layer, "combination_iou") for p in series], "-o", ms=3, color=colour,
                label=f"{layer} combination IoU")
        ax.plot(steps, [iou(p, layer, "single_filter_iou") for p in series], "--", color=colour, lw=1,
                label=f"{layer} single filter IoU")
        if any("natural" in p for p in series):
            ax.plot(steps, [iou(p["natural"], layer, "combination_iou") if "natural" in p else np.nan
                            for p in series], "-s", ms=2, color=colour, alpha=0.4,
                    label=f"{layer} combination IoU, natural control")
    summary = results.get("over_time_summary") or {}
    if summary.get("acquisition_step") is not None:
        ax.axvline(summary["acquisition_step"], color="grey", lw=1)
    ax.axhline(summary.get("threshold", 0.5), color="grey", lw=0.5, ls=":")
    positive = [s for s in steps if s > 0]
    ax.set_xscale("symlog", linthresh=min(positive) if positive else 1.0)
    ax.set_xlim(0, max(steps) if steps and max(steps) > 0 else 1)
    ax.set_xlabel("training step (symlog; 0 = untrained)")
    ax.set_ylim(0, 1.02)
    ax.set_title("planted pattern: acquisition (grey line) vs concept in the filters")
    ax.legend(fontsize=6, ncol=2)
    return fig


def plot_net2vec(results: dict[str, Any], out: str | pathlib.Path) -> list[str]:
    """Writes concept_iou.png, concept_embeddings.png and concept_over_time.png into `out`."""
    out = pathlib.Path(out)
    figures = {"concept_iou.png": concept_iou_figure(results),
               "concept_embeddings.png": concept_embeddings_figure(results)}
    if results["over_time"]:
        figures["concept_over_time.png"] = concept_over_time_figure(results)
    for name, fig in figures.items():
        fig.savefig(out / name, dpi=110)
    return list(figures)


def overlay_grid(images: np.ndarray, overlays: np.ndarray, *, row_labels: Sequence[str], column_labels: Sequence[str],
                 queries: Sequence[tuple[int, int]] | None = None, peaks: np.ndarray | None = None,
                 alpha: float = 0.6, query_images: np.ndarray | None = None) -> Figure:
    """A grid of similarity overlays: row r shows image `images[r]` (H, W, C in [0, 1] or uint8) under
    `overlays[r, j]` (rows: queries or images; columns: layers x models), the query pixel as a
    red cross on the first column and each map's peak as a red dot. With `query_images` the first
    column shows those (the image the query was taken on) and the overlays lie on `images`."""
    overlays = np.asarray(overlays)
    rows, cols = overlays.shape[:2]
    low = -1.0 if overlays.min() < 0 else 0.0  # ReLU features: cosines in [0, 1], use the whole colour map
    if len(images) != rows or len(row_labels) != rows or len(column_labels) != cols:
        raise ValueError(f"{rows} x {cols} overlays need {rows} images and row labels and {cols} column labels")
    fig, axes = subplots(rows, cols + 1, figsize=(1.9 * (cols + 1), 1.9 * rows), squeeze=False, layout="constrained")
    for r in range(rows):
        image = np.asarray(images[r], np.float32)
        image = image / 255.0 if image.max() > 1.0 else image
        shown = image[..., 0] if image.shape[-1] == 1 else image
        first = shown
        if query_images is not None:
            first = np.asarray(query_images[r], np.float32)
            first = first / 255.0 if first.max() > 1.0 else first
            first = first[..., 0] if first.shape[-1] == 1 else first
        axes[r][0].imshow(first, cmap="gray", vmin=0, vmax=1)
        axes[r][0].set_ylabel(row_labels[r], fontsize=7)
        if queries is not None:
            axes[r][0].plot(queries[r][1], queries[r][0], "r+", ms=10, mew=2)
        for j in range(cols):
            ax = axes[r][j + 1]
            ax.imshow(shown, cmap="gray", vmin=0, vmax=1)
            ax.imshow(overlays[r, j], cmap="jet", vmin=low, vmax=1, alpha=alpha)
            if peaks is not None:
                ax.plot(peaks[r, j, 1], peaks[r, j, 0], "r.", ms=6)
            if r == 0:
                ax.set_title(column_labels[j], fontsize=7)
    for ax in np.ravel(axes):
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0][0].set_title("query", fontsize=7)
    return fig
