"""Figures of the class-wise pattern study: the patterns themselves and their mask areas."""

from __future__ import annotations

import pathlib
from typing import Any, Mapping

import numpy as np

from anatomy_jax.plots.figure import subplots


def _show(ax, image: np.ndarray, **kwargs: Any) -> None:
    ax.imshow(image[..., 0] if image.shape[-1] == 1 else image, interpolation="nearest", **kwargs)
    ax.set_xticks([])
    ax.set_yticks([])


def plot_patterns(results: dict[str, Any], arrays: Mapping[str, np.ndarray], path: pathlib.Path) -> None:
    """Rows: per model its masks, patterns and one stamped image of another class; columns: classes."""
    models = list(results["models"])
    examples = arrays["examples"]
    k = examples.shape[0]
    fig, axes = subplots(3 * len(models), k, figsize=(1.1 * k + 1, 3.9 * len(models)), squeeze=False,
                         gridspec_kw={"hspace": 0.6})
    gray = {"cmap": "gray", "vmin": 0, "vmax": 1} if examples.shape[-1] == 1 else {}
    for m, name in enumerate(models):
        masks, patterns = arrays[f"{name}_masks"], arrays[f"{name}_patterns"]
        rows = results["models"][name]["classes"]
        for c in range(k):
            stamped = (1 - masks[c][..., None]) * examples[c] + masks[c][..., None] * patterns[c]
            _show(axes[3 * m, c], masks[c], cmap="magma", vmin=0, vmax=1)
            _show(axes[3 * m + 1, c], patterns[c], **gray)
            _show(axes[3 * m + 2, c], stamped, **gray)
            axes[3 * m, c].set_title(f"{c}: area {rows[c]['mask_area']:.2f}\nASR {rows[c]['asr']:.2f}", fontsize=7)
        for r, what in enumerate(("mask", "pattern", "stamped")):
            axes[3 * m + r, 0].set_ylabel(f"{name}\n{what}", fontsize=8)
    fig.suptitle("class-wise patterns (columns: classes)")
    fig.savefig(path, dpi=110, bbox_inches="tight")


def plot_mask_areas(results: dict[str, Any], path: pathlib.Path) -> None:
    """Bar chart of the mask area per class for each model, the backdoor target highlighted and
    the classes Neural Cleanse flags marked."""
    models = list(results["models"])
    target = results["trigger"]["target"]
    fig, axes = subplots(1, len(models), figsize=(4.2 * len(models), 3.2), sharey=True, squeeze=False)
    for ax, name in zip(axes[0], models):
        rows = results["models"][name]["classes"]
        areas = [r["mask_area"] for r in rows]
        colours = ["tab:red" if r["class"] == target else "tab:blue" for r in rows]
        ax.bar([r["class"] for r in rows], areas, color=colours)
        for c in results["models"][name]["flagged"]:
            ax.annotate("flagged", (c, areas[c]), ha="center", va="bottom", fontsize=7)
        ax.set_title(name)
        ax.set_xlabel("class")
        ax.set_xticks([r["class"] for r in rows])
    axes[0, 0].set_ylabel("mask area (share of the image)")
    fig.suptitle(f"mask area per class (red: backdoor target {target})", y=1.04)
    fig.savefig(path, dpi=110, bbox_inches="tight")


def plot_all(results: dict[str, Any], arrays: Mapping[str, np.ndarray], out: str | pathlib.Path) -> list[str]:
    """Writes patterns.png and mask_areas.png into `out`; returns their names."""
    out = pathlib.Path(out)
    plot_patterns(results, arrays, out / "patterns.png")
    plot_mask_areas(results, out / "mask_areas.png")
    return ["patterns.png", "mask_areas.png"]
