"""Layer activations as (n, h, w, K) maps, and a tracker of concepts over training time."""

from __future__ import annotations

from typing import Any, Collection, Sequence

import flax.linen as nn
import jax
import numpy as np

from anatomy_jax.concepts.data import ConceptData
from anatomy_jax.concepts.net2vec import ProbeSettings, analyse_layer
from anatomy_jax.similarity.representations import representation_shape, representations


def layer_activations(model: nn.Module, variables: Any, images: np.ndarray, layers: Sequence[str],
                      batch_size: int = 500) -> dict[str, np.ndarray]:
    """{layer: (n, h, w, K) float32} of uint8 images (n, H, W, C); ValueError for a layer without
    a spatial map (dense layers: Net2Vec's segmentation needs positions)."""
    images = np.asarray(images)
    if images.ndim != 4 or images.dtype != np.uint8:
        raise ValueError(f"images must be uint8 (n, H, W, C), got {images.dtype} {images.shape}")
    shapes = {name: representation_shape(model, variables, images.shape[1:], name) for name in layers}
    flat = [name for name, s in shapes.items() if len(s) != 3]
    if flat:
        raise ValueError(f"layer(s) {flat} have no spatial map (shapes {[shapes[n] for n in flat]}); choose "
                         f"convolutional layers")
    reps = representations(model, variables, images, tuple(layers), batch_size=batch_size)
    return {name: reps[name].reshape(len(images), *shapes[name]) for name in layers}


def spatial_layers(model: nn.Module, variables: Any, image_shape: tuple[int, int, int]) -> tuple[str, ...]:
    """The model's layers whose representation is an (h, w, K) map with more than one position."""
    out = []
    for name in model.layer_names:
        shape = representation_shape(model, variables, image_shape, name)
        if len(shape) == 3 and shape[0] * shape[1] > 1:
            out.append(name)
    return tuple(out)


def tracking_steps(steps: int, eval_every: int, points: int) -> tuple[int, ...]:
    """Step 0 (the untrained net) and up to `points` evaluation steps (the multiples of `eval_every`,
    and `steps`), picked geometrically along the evaluation index: every early evaluation, sparse
    late ones (a pattern is acquired early; a late point adds little). All evaluations when there
    are at most `points`."""
    for name, value in (("steps", steps), ("eval_every", eval_every), ("points", points)):
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    evals = sorted(set(range(eval_every, steps + 1, eval_every)) | {steps})
    if points >= len(evals):
        return (0, *evals)
    picked = np.unique(np.round(np.geomspace(1, len(evals), points)).astype(int)) - 1
    return (0, *(evals[i] for i in picked))


def variables_of(state: Any) -> dict[str, Any]:
    """A train state's model variables (params, and batch_stats where the model has them)."""
    return {"params": state.params, **({"batch_stats": state.batch_stats} if state.batch_stats else {})}


class ConceptTracker:
    """A `Study.run(tracking=...)` run tracker: at the evaluation steps in `steps` (default: every
    one), the single-best-filter and learned-combination test IoU of `concepts` at each of `layers`
    (`analyse_layer` without the filters-needed search and classification), with the run's clean
    accuracy and ASR at that step. `measure` takes a record at any other step (e.g. step 0, before
    training, which the training loop does not evaluate). Records are JSON:

        {"step": int, "clean_accuracy": float|None, "attack_success_rate": float|None,
         "layers": {layer: {concept: {"single_filter_iou": float|None, "combination_iou": float|None}}}}
    """

    def __init__(self, model: nn.Module, train: ConceptData, test: ConceptData, layers: Sequence[str],
                 concepts: Sequence[str], settings: ProbeSettings, key: jax.Array,
                 records: list[dict] | None = None, steps: Collection[int] | None = None):
        settings.validate()
        self.model, self.train, self.test, self.layers = model, train, test, tuple(layers)
        self.names = tuple(concepts)
        self.indices = [train.index(c) for c in self.names]
        self.settings, self.key = settings, key
        self.steps = None if steps is None else frozenset(int(s) for s in steps)
        self._records = list(records or [])

    def measure(self, step: int, variables: Any, metrics: dict | None = None) -> dict[str, Any]:
        """The record of `variables` at `step` (appended to the records); `metrics` as the sweep's
        evaluation gives them (`clean_accuracy`, `attack_success_rate` per pattern), or None."""
        train = layer_activations(self.model, variables, self.train.images, self.layers)
        test = layer_activations(self.model, variables, self.test.images, self.layers)
        entry: dict[str, Any] = {"step": int(step), **_run_metrics(metrics), "layers": {}}
        for li, layer in enumerate(self.layers):
            found = analyse_layer(train[layer], self.train.masks, self.train.labels, test[layer], self.test.masks,
                                  self.test.labels, self.settings, jax.random.fold_in(self.key, li),
                                  concepts=self.indices, fraction=None, classify=False)
            entry["layers"][layer] = {name: {"single_filter_iou": _json(found.single_filter_iou[c]),
                                             "combination_iou": _json(found.combination_iou[c])}
                                      for name, c in zip(self.names, self.indices)}
        self._records.append(entry)
        return entry

    def __call__(self, step: int, state: Any, metrics: dict) -> None:
        if self.steps is None or int(step) in self.steps:
            self.measure(step, variables_of(state), metrics)

    def records(self) -> list[dict]:
        return list(self._records)


def _run_metrics(metrics: dict | None) -> dict[str, float | None]:
    """clean_accuracy and the first pattern's ASR of an evaluation (None where absent)."""
    metrics = metrics or {}
    acc = metrics.get("clean_accuracy")
    asr = metrics.get("attack_success_rate")
    asr = None if asr is None else np.ravel(np.asarray(asr))
    return {"clean_accuracy": None if acc is None else _json(float(np.asarray(acc))),
            "attack_success_rate": None if asr is None or asr.size == 0 else _json(float(asr[0]))}


def _json(value: float) -> float | None:
    return None if not np.isfinite(value) else float(value)
