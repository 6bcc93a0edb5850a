"""Observers that record gradient-alignment and saliency probes during training.

At every evaluation step a probe takes a fixed batch of training images (stamped and labelled
exactly as training sees them, without augmentation), computes per-example gradients with the
model's running statistics, and records the statistics of `gradient_alignment` for the groups

    0 = clean,  1 + 2k = carries pattern k and is labelled with its target,
                2 + 2k = carries pattern k and keeps another label        (k < K patterns)

(`group_names`), for the whole network and for its first and last layer; the optimizer's update
for the training-set mean gradient the batch estimates (from the current optimizer state, so
momentum is included); and the saliency mass inside pattern 0 on stamped test images not of its
target. It reads the state and never changes training.

The probe batch (`probe_batch`) is stratified: each group present in the training set gets
min(c_g, max(its proportional share, floor)) of the `probe_size` images, floor =
probe_size // (2 * num_groups) (c_g: the group's training count; `stratified_sizes` spells out
the rule), so statistics of a rare pattern are not computed on one or two images. Each example
of group g is weighted by w = (c_g / n_g) / N (n_g: the group's probe count, N: training images),
so a group's summed weighted gradient estimates its share of the training-set mean gradient,
the share SGD sees, and its weight sums to c_g / N.

`SweepGradientProbe` observes a whole sweep (`train_sweep`): every run's statistics come from one
jitted `vmap` of `probe_statistics` over the runs. `GradientProbe` is the same probe for one run
(`train_loop`, or `per_run` in a sweep). Records are JSON:

    {"step": int, "saliency_mass": float,
     "count": [G], "weight": [G], "mean_grad_norm": [G], "mean_cosine": [[G x G]], "coherence": [G],
     "coherence_overall": float, "mean_pairwise_cosine": [G], "norm_share": [G],
     "projection_share": [G], "update_share": [G], "update_cosine": [G],
     "layers": {"<layer path>": {the same statistics but count and weight}, ...}}

with G = 1 + 2K groups; non-finite values (a diverged run) are written as finite numbers
(`np.nan_to_num`).
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple, Sequence

import chex
import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from anatomy_jax.poison.patterns import stamp
from anatomy_jax.probes.gradients import (AlignmentSums, alignment_statistics, alignment_sums, flatten_per_example,
                                          layer_order, model_loss_fn, per_example_grads, saliency_mass)
from anatomy_jax.train.evaluation import to_float
from anatomy_jax.train.runs import RunData, stack_trees
from anatomy_jax.train.steps import Trainer, TrainState

GROUP_NAMES = ("clean", "pattern_target", "pattern_other")

# (layer path, its (start, stop) column ranges in the flattened parameter vector)
LayerSlices = tuple[tuple[str, tuple[tuple[int, int], ...]], ...]


def num_groups(num_patterns: int) -> int:
    """1 + 2K: clean, then (labelled with the target, other label) per pattern."""
    return 1 + 2 * num_patterns


def group_names(pattern_names: Sequence[str]) -> tuple[str, ...]:
    """The names of the groups of K patterns: `GROUP_NAMES` for one pattern; otherwise "clean",
    then "<name>_target", "<name>_other" per pattern (names repeated get their index appended)."""
    names = list(pattern_names)
    if len(names) == 1:
        return GROUP_NAMES
    unique = [n if names.count(n) == 1 else f"{n}{k}" for k, n in enumerate(names)]
    return ("clean",) + tuple(f"{n}_{kind}" for n in unique for kind in ("target", "other"))


def example_groups(pattern_id: np.ndarray, labels: np.ndarray, targets: Sequence[int]) -> np.ndarray:
    """The group of every training example (see the module docstring): 0 when `pattern_id` < 0,
    1 + 2k when it carries pattern k and its label is k's target, 2 + 2k otherwise."""
    pid = np.asarray(pattern_id)
    targets = np.asarray(targets, np.int64)
    if pid.max(initial=-1) >= len(targets):
        raise ValueError(f"pattern ids must be < the {len(targets)} targets, got {pid.max()}")
    k = np.maximum(pid, 0)
    on_target = np.asarray(labels) == (targets[k] if len(targets) else -1)
    return np.where(pid < 0, 0, np.where(on_target, 1 + 2 * k, 2 + 2 * k)).astype(np.int32)


def stratified_sizes(counts: Sequence[int], size: int, floor: int) -> np.ndarray:
    """How many probe examples each group gets: n_g = min(c_g, max(share_g, floor)) for every
    group present (c_g > 0), where share_g is its proportional share of what the groups held at
    the floor or at their whole count leave of `size` (largest remainder, so the n_g sum to `size`
    unless the groups hold fewer examples, then every example is taken)."""
    counts = np.asarray(counts, np.int64)
    if size < 0 or floor < 0 or (counts < 0).any():
        raise ValueError(f"sizes and counts must be >= 0, got size {size}, floor {floor}, counts {counts.tolist()}")
    sizes = np.zeros_like(counts)
    free = counts > 0
    while free.any():  # fix the groups whose share falls below the floor or exceeds their count
        budget = size - sizes[~free].sum()
        share = budget * counts * free / counts[free].sum()
        low, high = free & (share < np.minimum(floor, counts)), free & (share >= counts)
        if not (low | high).any():
            base = np.floor(share).astype(np.int64) * free
            order = np.argsort(np.where(free, base - share, np.inf), kind="stable")  # largest remainders first
            base[order[:budget - base.sum()]] += 1
            return np.where(free, base, sizes)
        sizes[low], sizes[high] = np.minimum(floor, counts[low]), counts[high]
        free &= ~(low | high)
    return sizes


class ProbeBatch(NamedTuple):
    """One run's probe inputs: the weighted training examples and the saliency test images."""

    x: jax.Array  # (P, H, W, C) float images, stamped as training sees them
    y: jax.Array  # (P,) int32 training labels
    groups: jax.Array  # (P,) int32 (-1: padding)
    weights: jax.Array  # (P,) float32 (c_g / n_g) / N (0: padding)
    test_x: jax.Array  # (S, H, W, C) stamped test images
    test_y: jax.Array  # (S,)
    test_mask: jax.Array  # (S, H, W, 1) where the pattern sits
    test_valid: jax.Array  # (S,) float32 (0: padding)


def probe_batch(data: RunData, key: jax.Array, *, probe_size: int = 256, saliency_size: int = 128) -> ProbeBatch:
    """The stratified, weighted probe batch of a poisoned run (module docstring), drawn with `key`.
    Padded to `probe_size` (and `saliency_size`) with zero-weight entries when the run has fewer."""
    backdoor = data.backdoor
    if backdoor is None:
        raise ValueError("the gradient probe needs a poisoned run (its data has no pattern)")
    if probe_size < 1 or saliency_size < 1:
        raise ValueError(f"probe_size and saliency_size must be >= 1, got {probe_size} and {saliency_size}")
    plan = data.plan
    targets = np.asarray(backdoor.targets)
    k = num_groups(len(targets))
    groups = example_groups(np.asarray(plan.pattern_id), np.asarray(plan.labels), targets)
    counts = np.bincount(groups, minlength=k)
    sizes = stratified_sizes(counts, probe_size, probe_size // (2 * k))
    rng = np.random.default_rng(np.asarray(jax.random.key_data(key)).astype(np.uint32))
    idx = np.concatenate([rng.choice(np.flatnonzero(groups == g), sizes[g], replace=False) for g in range(k)])
    idx = np.sort(idx)
    weights = (counts / np.maximum(sizes, 1) / len(groups))[groups[idx]]
    pad = probe_size - len(idx)
    probe_groups = np.concatenate([groups[idx], np.full(pad, -1, np.int32)])
    weights = np.concatenate([weights, np.zeros(pad)]).astype(np.float32)
    idx = jnp.asarray(np.concatenate([idx, np.zeros(pad, idx.dtype)]))
    x = stamp(to_float(data.images[idx]), plan.pattern_id[idx], plan.offsets[idx], data.patterns)
    # Saliency on stamped test images not of pattern 0's target, mask = where the pattern sits.
    ev = data.test
    test_images = ev.images.reshape(-1, *ev.images.shape[2:])
    test_labels = ev.labels.reshape(-1)
    offsets = backdoor.offsets[0].reshape(-1, 2)
    keep = np.flatnonzero((np.asarray(test_labels) != targets[0]) & np.asarray(ev.valid.reshape(-1)))[:saliency_size]
    valid = np.concatenate([np.ones(len(keep)), np.zeros(saliency_size - len(keep))]).astype(np.float32)
    keep = jnp.asarray(np.concatenate([keep, np.zeros(saliency_size - len(keep), keep.dtype)]))
    test_x = stamp(to_float(test_images[keep]), jnp.zeros(len(keep), jnp.int32), offsets[keep], data.patterns)
    test_mask = jax.vmap(lambda o: jnp.roll(data.patterns.mask[0], (o[0], o[1]), axis=(0, 1)))(offsets[keep])
    return ProbeBatch(x, plan.labels[idx], jnp.asarray(probe_groups), jnp.asarray(weights), test_x, test_labels[keep],
                      test_mask, jnp.asarray(valid))


def layer_slices(params: Any, layers: Sequence[str]) -> LayerSlices:
    """The column ranges of each layer's parameters (leaves whose path is `layer` or starts with
    `layer/`) in the flattened parameter vector (leaf order, as `flatten_per_example` and
    `ravel_pytree` lay it out)."""
    leaves = jax.tree_util.tree_flatten_with_path(params)[0]
    paths = ["/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path) for path, _ in leaves]
    ends = np.cumsum([int(np.prod(leaf.shape)) for _, leaf in leaves])
    out = []
    for layer in layers:
        ranges = tuple((int(e - int(np.prod(leaf.shape))), int(e)) for p, (_, leaf), e in zip(paths, leaves, ends)
                       if p == layer or p.startswith(layer + "/"))
        if not ranges:
            known = sorted({p.rsplit("/", 1)[0] for p in paths})
            raise ValueError(f"no parameters under layer {layer!r}; layers: {known}")
        out.append((layer, ranges))
    return tuple(out)


def _columns(g: jax.Array, ranges: tuple[tuple[int, int], ...]) -> jax.Array:
    return jnp.concatenate([g[..., a:b] for a, b in ranges], axis=-1)


def _sum_over_chunks(fn, arrays: tuple, fills: tuple, chunk_size: int | None, unroll: bool):
    """sum over chunks of fn(*chunk of arrays): a static sequence (`unroll`) or a `lax.map` over
    chunks padded with `fills` (fill values that fn must count as nothing)."""
    n = arrays[0].shape[0]
    if chunk_size is None or chunk_size >= n:
        return fn(*arrays)
    if unroll:
        parts = [fn(*(a[i:i + chunk_size] for a in arrays)) for i in range(0, n, chunk_size)]
        return jax.tree.map(lambda *xs: sum(xs[1:], xs[0]), *parts)
    pad = (-n) % chunk_size
    chunks = tuple(jnp.concatenate([a, jnp.full((pad, *a.shape[1:]), f, a.dtype)]).reshape(-1, chunk_size, *a.shape[1:])
                   for a, f in zip(arrays, fills))
    return jax.tree.map(lambda x: x.sum(0), jax.lax.map(lambda c: fn(*c), chunks))


def probe_statistics(trainer: Trainer, params: Any, batch_stats: Any, opt_state: Any, batch: ProbeBatch, *,
                     num_groups: int, layers: LayerSlices = (), chunk_size: int | None = None,
                     unroll_chunks: bool = False, eps: float = 1e-12) -> dict[str, Any]:
    """One run's probe values (pure, jittable with static keywords, vmappable over runs).

    Per-example gradients are taken `chunk_size` at a time and only their weighted group sums are
    kept (`alignment_sums`), so memory does not grow with the probe size. The update is the
    optimizer's step for the weighted mean gradient, the estimate of the training-set gradient.
    Returns the `gradient_alignment` statistics of the `num_groups` groups, `layers` (the same
    restricted to each layer's columns, without count and weight) and `saliency_mass`.
    """
    loss_fn = model_loss_fn(trainer.model.apply, batch_stats)
    _, unravel = ravel_pytree(params)

    def chunk(x, y, g, w) -> tuple[AlignmentSums, tuple[AlignmentSums, ...]]:
        flat = flatten_per_example(per_example_grads(loss_fn, params, x, y))
        return (alignment_sums(flat, g, num_groups, w, eps),
                tuple(alignment_sums(_columns(flat, r), g, num_groups, w, eps) for _, r in layers))

    whole, per_layer = _sum_over_chunks(chunk, (batch.x, batch.y, batch.groups, batch.weights), (0, 0, -1, 0),
                                        chunk_size, unroll_chunks)
    mean_grad = unravel(whole.grad_sum.sum(0) / jnp.maximum(whole.weight.sum(), eps))
    update, _ = trainer.tx.update(mean_grad, opt_state, params)
    d = ravel_pytree(update)[0]
    stats: dict[str, Any] = alignment_statistics(whole, d, eps)
    stats["layers"] = {name: {k: v for k, v in alignment_statistics(s, _columns(d, r), eps).items()
                              if k not in ("count", "weight")} for (name, r), s in zip(layers, per_layer)}
    per_image = saliency_mass(loss_fn, params, batch.test_x, batch.test_y, batch.test_mask, eps)["per_image"]
    stats["saliency_mass"] = jnp.sum(per_image * batch.test_valid) / jnp.maximum(batch.test_valid.sum(), 1.0)
    return stats


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3, 4))
def _probe_runs(trainer: Trainer, groups: int, layers: LayerSlices, chunk_size: int | None, unroll: bool,
                params, batch_stats, opt_state, batches: ProbeBatch) -> dict[str, Any]:
    run = functools.partial(probe_statistics, trainer, num_groups=groups, layers=layers, chunk_size=chunk_size,
                            unroll_chunks=unroll)
    return jax.vmap(run)(params, batch_stats, opt_state, batches)


def _to_json(value: Any) -> Any:
    value = np.nan_to_num(np.asarray(value, dtype=float))
    return value.tolist() if value.ndim else float(value)


class SweepGradientProbe:
    """Observer for `train_sweep` (a `SweepObserver`): probes every run of a sweep in one program.

    runs: each real run's (RunData, key) (all poisoned, with the same number of patterns); the key
    draws the run's probe batch (`probe_batch`). `layers`: the layer paths to also probe on their
    own (default: the first and the last layer the network applies, `layer_order`).
    `pattern_names` names the groups (`group_names`). `records` restores the per-run records of a
    resumed sweep (as `records()` returned them; also `restore`).

    `probe(step, states, metrics)` takes the host states stacked over runs (leading axis >= the
    number of runs: rows past the real runs are padding and are ignored) and appends one record
    per real run; `records()` is one list of records per real run.
    """

    def __init__(self, trainer: Trainer, runs: Sequence[tuple[RunData, jax.Array]], *, probe_size: int = 256,
                 saliency_size: int = 128, chunk_size: int | None = 32, layers: Sequence[str] | None = None,
                 pattern_names: Sequence[str] | None = None, unroll_chunks: bool | None = None,
                 records: Sequence[Sequence[dict]] | None = None):
        if not runs:
            raise ValueError("a sweep probe needs at least one run")
        if chunk_size is not None and chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1 (or None), got {chunk_size}")
        patterns = {int(np.asarray(d.backdoor.targets).shape[0]) if d.backdoor is not None else 0 for d, _ in runs}
        if 0 in patterns:
            raise ValueError("the gradient probe needs poisoned runs (a run's data has no pattern)")
        if len(patterns) > 1:
            raise ValueError(f"the runs of a sweep probe must have the same number of patterns, got {sorted(patterns)}")
        num_patterns = patterns.pop()
        names = list(pattern_names) if pattern_names is not None else [f"pattern{k}" for k in range(num_patterns)]
        if len(names) != num_patterns:
            raise ValueError(f"pattern_names must name the {num_patterns} patterns, got {names}")
        self.trainer = trainer
        self.group_names = group_names(names)
        self.num_groups = num_groups(num_patterns)
        self.chunk_size = chunk_size
        self.unroll_chunks = jax.default_backend() == "cpu" if unroll_chunks is None else unroll_chunks
        self.batches = [probe_batch(d, key, probe_size=probe_size, saliency_size=saliency_size) for d, key in runs]
        shapes = jax.eval_shape(lambda: trainer.model.init(
            jax.random.key(0), jnp.zeros((1, *runs[0][0].images.shape[1:]), jnp.float32), train=False))
        if layers is None:
            order = layer_order(lambda p, s, x, y: model_loss_fn(trainer.model.apply, s)(p, x, y), shapes["params"],
                                shapes.get("batch_stats", {}), self.batches[0].x[:1], self.batches[0].y[:1])
            layers = list(dict.fromkeys([order[0], order[-1]]))
        self.layers = tuple(layers)
        self._slices = layer_slices(shapes["params"], self.layers)
        self._stacked = stack_trees(self.batches)
        self._padded: dict[int, ProbeBatch] = {}
        self.history: list[list[dict[str, Any]]] = [[] for _ in runs]
        if records is not None:
            self.restore(records)

    @property
    def num_runs(self) -> int:
        return len(self.history)

    def restore(self, records_per_run: Sequence[Sequence[dict]]) -> None:
        """Continues from the records of a checkpoint (one list per real run)."""
        if len(records_per_run) != self.num_runs:
            raise ValueError(f"expected records of {self.num_runs} runs, got {len(records_per_run)}")
        self.history = [list(r) for r in records_per_run]

    def _inputs(self, size: int) -> ProbeBatch:
        """The stacked probe batches padded to `size` rows by repeating the last run's."""
        if size < self.num_runs:
            raise ValueError(f"the states stack {size} runs, fewer than the probe's {self.num_runs}")
        if size not in self._padded:
            extra = size - self.num_runs
            self._padded[size] = jax.tree.map(lambda x: jnp.concatenate([x] + [x[-1:]] * extra), self._stacked) \
                if extra else self._stacked
        return self._padded[size]

    def __call__(self, step: int, states: TrainState, metrics: dict) -> None:
        chex.assert_equal_shape_prefix(jax.tree.leaves(states.params), 1)
        batches = self._inputs(int(np.shape(states.step)[0]))
        stats = jax.device_get(_probe_runs(self.trainer, self.num_groups, self._slices, self.chunk_size,
                                           self.unroll_chunks, states.params, states.batch_stats, states.opt_state,
                                           batches))
        layers = stats.pop("layers")
        saliency = stats.pop("saliency_mass")
        for r in range(self.num_runs):
            record: dict[str, Any] = {"step": int(step), "saliency_mass": _to_json(saliency[r])}
            record.update({name: _to_json(value[r]) for name, value in stats.items()})
            # in network order (first layer first): jit returns dicts with sorted keys
            record["layers"] = {layer: {name: _to_json(value[r]) for name, value in layers[layer].items()}
                                for layer in self.layers}
            self.history[r].append(record)

    def records(self) -> list[list[dict[str, Any]]]:
        """The records of every real run, one list per run (JSON)."""
        return [list(h) for h in self.history]


class GradientProbe:
    """Observer for `train_loop` (one run): a `SweepGradientProbe` of that run alone (same keywords).
    `records()` holds one record per evaluation step; `history` can be set to resume."""

    def __init__(self, trainer: Trainer, data: RunData, key: jax.Array, **kwargs: Any):
        self.sweep = SweepGradientProbe(trainer, [(data, key)], **kwargs)

    @property
    def batch(self) -> ProbeBatch:
        return self.sweep.batches[0]

    @property
    def group_names(self) -> tuple[str, ...]:
        return self.sweep.group_names

    @property
    def layers(self) -> tuple[str, ...]:
        return self.sweep.layers

    @property
    def history(self) -> list[dict[str, Any]]:
        return self.sweep.history[0]

    @history.setter
    def history(self, records: Sequence[dict]) -> None:
        self.sweep.restore([records])

    def restore(self, records: Sequence[dict]) -> None:
        """Continues from the records of a checkpoint."""
        self.sweep.restore([records])

    def __call__(self, step: int, state: TrainState, metrics: dict) -> None:
        self.sweep(step, jax.tree.map(lambda x: np.asarray(x)[None], state), metrics)

    def records(self) -> list[dict[str, Any]]:
        """The probe values of every evaluation step so far (JSON)."""
        return self.sweep.records()[0]
