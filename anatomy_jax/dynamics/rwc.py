"""Relative weight change (RWC) per layer (Agrawal et al., arXiv 2011.06735).

Two definitions, both over the weight tensors of a params pytree (leaves with ndim > 1 by
default: conv kernels and dense weights; biases and norm scales are excluded):

* `l1_ratio` (the paper's equation): ||w_t - w_{t-1}||_1 / ||w_{t-1}||_1.
* `elementwise` (the authors' code): mean over elements of |w_t - w_{t-1}| / |w_{t-1}|.

Zero division is explicit. In `elementwise`, elements whose previous value is exactly zero are
skipped (the mean runs over the others; every non-zero element is exact). In both modes a
tensor whose previous values are all zero gets 0.0 if it did not change and +inf if it did, so
no NaN is ever produced (the aggregation in `clustering` replaces inf by the layer mean).
"""

from __future__ import annotations

import re
from typing import Any, Callable, Sequence

import jax
import numpy as np

MODES = ("l1_ratio", "elementwise")


def _path_name(path) -> str:
    parts = []
    for entry in path:
        for attr in ("key", "name", "idx"):
            if hasattr(entry, attr):
                parts.append(str(getattr(entry, attr)))
                break
    return "/".join(parts)


def layer_weights(params: Any, include: Callable[[str, np.ndarray], bool] | None = None) -> dict[str, np.ndarray]:
    """{"/"-joined path: array} of the tensors RWC measures (default: ndim > 1)."""
    include = include or (lambda name, w: w.ndim > 1)
    leaves = jax.tree_util.tree_flatten_with_path(params)[0]
    out = {}
    for path, leaf in leaves:
        w = np.asarray(leaf)
        name = _path_name(path)
        if include(name, w):
            out[name] = w
    return out


def weight_names(params: Any, include: Callable[[str, Any], bool] | None = None) -> list[str]:
    """The names `layer_weights` would return, without copying anything (works on the
    `jax.ShapeDtypeStruct`s of `jax.eval_shape`)."""
    include = include or (lambda name, w: w.ndim > 1)
    return [name for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]
            if include(name := _path_name(path), leaf)]


def _rwc(prev: np.ndarray, new: np.ndarray, mode: str) -> float:
    prev = prev.astype(np.float64)
    delta = np.abs(new.astype(np.float64) - prev)
    if mode == "l1_ratio":
        denominator = np.abs(prev).sum()
        if denominator == 0:
            return 0.0 if delta.sum() == 0 else float("inf")
        return float(delta.sum() / denominator)
    nonzero = prev != 0
    if not nonzero.any():
        return 0.0 if delta.sum() == 0 else float("inf")
    return float(np.mean(delta[nonzero] / np.abs(prev[nonzero])))


def relative_weight_change(prev_params: Any, params: Any, mode: str = "l1_ratio",
                           include: Callable[[str, np.ndarray], bool] | None = None) -> dict[str, float]:
    """{layer name: RWC} between two params pytrees of the same structure.

    Layer names are "/"-joined pytree paths (e.g. "conv1/Conv_0/kernel"). `include(name, array)`
    chooses the tensors (default: ndim > 1).
    """
    if mode not in MODES:
        raise ValueError(f"unknown RWC mode {mode!r}; choose one of {', '.join(MODES)}")
    prev = layer_weights(prev_params, include)
    new = layer_weights(params, include)
    if prev.keys() != new.keys():
        raise ValueError(f"params differ in structure: {sorted(prev.keys() ^ new.keys())}")
    for name in prev:
        if prev[name].shape != new[name].shape:
            raise ValueError(f"{name}: shape {prev[name].shape} vs {new[name].shape}")
    return {name: _rwc(prev[name], new[name], mode) for name in prev}


def _natural_key(text: str) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text)]


def depth_order(names: Sequence[str], stage_names: Sequence[str] | None = None) -> list[str]:
    """Layer names sorted by depth: by the model's stage order (`model.layer_names`), then by
    natural order inside a stage, so that Conv_2 comes before Conv_10."""
    stage_index = {s: i for i, s in enumerate(stage_names or ())}

    def key(name: str):
        top = name.split("/", 1)[0]
        return (stage_index.get(top, len(stage_index)), _natural_key(name))

    return sorted(names, key=key)


class RWCTracker:
    """An observer for `train_loop` that records the RWC of every weight tensor between
    consecutive calls (use `eval_every` = steps per epoch for per-epoch RWC).

    It copies parameters to the host, so it never changes training. `history` is a list of
    (step, {layer: value}); the first call only stores the reference parameters unless
    `initial_params` were given.
    """

    def __init__(self, mode: str = "l1_ratio", initial_params: Any = None,
                 include: Callable[[str, np.ndarray], bool] | None = None):
        if mode not in MODES:
            raise ValueError(f"unknown RWC mode {mode!r}; choose one of {', '.join(MODES)}")
        self.mode = mode
        self.include = include
        self.history: list[tuple[int, dict[str, float]]] = []
        self._prev = None if initial_params is None else jax.device_get(initial_params)

    def __call__(self, step: int, state: Any, metrics: dict) -> None:
        params = jax.device_get(state.params)
        if self._prev is not None:
            self.history.append((int(step), relative_weight_change(self._prev, params, self.mode, self.include)))
        self._prev = params

    def records(self) -> list[list]:
        """The history as JSON-ready [step, {layer: value}] pairs (inf and NaN as None)."""
        return [[step, {k: (v if np.isfinite(v) else None) for k, v in values.items()}]
                for step, values in self.history]

    @classmethod
    def restore(cls, mode: str, records: Sequence, prev_params: Any,
                include: Callable[[str, np.ndarray], bool] | None = None) -> "RWCTracker":
        """A tracker that continues from a checkpoint: its `records()` and the checkpointed params."""
        tracker = cls(mode, initial_params=prev_params, include=include)
        tracker.history = [(int(step), {k: (float("inf") if v is None else float(v)) for k, v in values.items()})
                           for step, values in records]
        return tracker

    def matrix(self, order: Sequence[str] | None = None) -> tuple[list[str], np.ndarray]:
        """(layer names, layers x records matrix) of the recorded history."""
        if not self.history:
            return [], np.zeros((0, 0))
        names = list(order) if order is not None else list(self.history[0][1])
        return names, np.array([[record[n] for _, record in self.history] for n in names], dtype=float)
