"""Figures of the attribution study, drawn from results.json and maps.npz."""

from __future__ import annotations

import pathlib
from typing import Any, Mapping

import numpy as np

from anatomy_jax.plots.figure import subplots

SHOWN_IMAGES = 6


def _show(ax, image: np.ndarray, **kwargs: Any) -> None:
    ax.imshow(image[..., 0] if image.ndim == 3 and image.shape[-1] == 1 else image, interpolation="nearest",
              **kwargs)
    ax.set_xticks([])
    ax.set_yticks([])


def _box(ax, box: list[int]) -> None:
    from matplotlib.patches import Rectangle

    r0, c0, r1, c1 = box
    ax.add_patch(Rectangle((c0 - 0.5, r0 - 0.5), c1 - c0, r1 - r0, fill=False, edgecolor="cyan", linewidth=1))


def plot_masks(results: dict[str, Any], arrays: Mapping[str, np.ndarray], path: pathlib.Path) -> None:
    """Rows: stamped images; columns: the image, every method's map (trigger box in cyan) and the
    extremal mask of each area."""
    images = arrays["stamped"][:SHOWN_IMAGES]
    methods = list(results["methods"])
    areas = results["areas"]
    cols = 1 + len(methods) + len(areas)
    fig, axes = subplots(len(images), cols, figsize=(1.2 * cols, 1.25 * len(images) + 0.6), squeeze=False)
    gray = {"cmap": "gray", "vmin": 0, "vmax": 1} if images.shape[-1] == 1 else {}
    box = results["trigger"]["box"]
    for i, image in enumerate(images):
        _show(axes[i, 0], image, **gray)
        for j, name in enumerate(methods):
            _show(axes[i, 1 + j], arrays[f"map_{name}"][i], cmap="magma")
            _box(axes[i, 1 + j], box)
        for k, area in enumerate(areas):
            _show(axes[i, 1 + len(methods) + k], arrays["extremal_masks"][i, k], cmap="magma", vmin=0, vmax=1)
            _box(axes[i, 1 + len(methods) + k], box)
    titles = ["image", *[m.replace("_", "\n") for m in methods], *[f"extremal\na={a:g}" for a in areas]]
    for j, title in enumerate(titles):
        axes[0, j].set_title(title, fontsize=7)
    fig.suptitle(f"maps of the target class {results['trigger']['target']} on stamped images (trigger box in cyan)")
    fig.savefig(path, dpi=110, bbox_inches="tight")


def plot_area_curves(results: dict[str, Any], path: pathlib.Path) -> None:
    """The extremal perturbation's preserved class score (mean +- sd over images) against the area."""
    a = results["area_curve"]
    fig, ax = subplots(1, 1, figsize=(4.5, 3.4), layout="constrained")
    ax.errorbar(a["areas"], a["score_mean"], yerr=a["score_std"], marker="o", capsize=3)
    ax.set_xlabel("area a (share of the image kept)")
    ax.set_ylabel("target score of the preserved image")
    ax.set_title("extremal perturbation: score against area", fontsize=9)
    fig.savefig(path, dpi=110)


def plot_deletion_insertion(results: dict[str, Any], path: pathlib.Path) -> None:
    """Mean deletion and insertion curves per method, on stamped and on clean images."""
    fig, axes = subplots(2, 2, figsize=(9, 6.5), layout="constrained", squeeze=False)
    for row, (where, label) in enumerate(((lambda r: r, "stamped (target)"), (lambda r: r["clean"], "clean (true class)"))):
        for col, kind in enumerate(("deletion", "insertion")):
            ax = axes[row, col]
            for name, r in results["methods"].items():
                curve = where(r)[f"{kind}_curve"]
                ax.plot(np.linspace(0, 1, len(curve)), curve, label=f"{name} ({where(r)[f'{kind}_auc']:.2f})")
            ax.set_title(f"{kind}, {label}", fontsize=9)
            ax.set_xlabel("share of pixels " + ("removed" if kind == "deletion" else "inserted"))
            ax.set_ylabel("class probability")
            ax.legend(fontsize=6)
    fig.savefig(path, dpi=110)


def plot_all(results: dict[str, Any], arrays: Mapping[str, np.ndarray], out: pathlib.Path) -> list[str]:
    """Writes masks.png, area_curves.png and deletion_insertion.png; returns their names."""
    out = pathlib.Path(out)
    plot_masks(results, arrays, out / "masks.png")
    plot_area_curves(results, out / "area_curves.png")
    plot_deletion_insertion(results, out / "deletion_insertion.png")
    return ["masks.png", "area_curves.png", "deletion_insertion.png"]
