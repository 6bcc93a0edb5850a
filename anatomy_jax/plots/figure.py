"""Figures without pyplot: no backend is forced and no global figure state is touched, so the
same code saves PNGs in a script and shows inline in a notebook (return the figure)."""

from __future__ import annotations

from typing import Any

from matplotlib.figure import Figure


def subplots(nrows: int = 1, ncols: int = 1, *, figsize: tuple[float, float], layout: str | None = None,
             **kwargs: Any) -> tuple[Figure, Any]:
    """`plt.subplots` for a standalone `Figure` (freed when it goes out of scope)."""
    fig = Figure(figsize=figsize, layout=layout)
    return fig, fig.subplots(nrows, ncols, **kwargs)
