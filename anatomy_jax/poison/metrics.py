"""Backdoor metrics: how strongly a net responds to a planted pattern, as standalone functions.

* attack success rate (ASR): the share of test images whose label is not the target that the net
  classifies as the target once the pattern is stamped on them;
* reliance: the mean, over the same images, of margin(stamped) - margin(clean), where the target
  margin is z_t - max_{j != t} z_j (how far the pattern moves the logits toward the target);
* clean target rate: the share of the same images classified as the target *without* the
  pattern: the baseline the ASR has to beat (a barely trained net that predicts the target class
  for most inputs has a high ASR and an equally high clean target rate).

The acquisition step of an ASR curve is *sustained*: the first evaluation from which the ASR stays
at or above the threshold (`acquisition_step`); `first_crossing_step` is the first evaluation that
reaches it at all (a spike of an untrained net counts there).

`attack_success_rate` and `reliance` take logits; `BackdoorMetrics` is the same computation as
a test-set metric (per-batch sums, then ratios) that a study composes with the clean metrics of
`anatomy_jax.train.evaluation`. Nothing here knows about training.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, NamedTuple, Sequence

import chex
import jax
import jax.numpy as jnp

from anatomy_jax.poison.patterns import Patterns, image_offsets, stamp


def target_margin(logits: jax.Array, target: jax.Array) -> jax.Array:
    """z_t - max_{j != t} z_j per example."""
    z_t = jnp.take_along_axis(logits, target[:, None], axis=-1)[:, 0]
    others = jnp.where(jax.nn.one_hot(target, logits.shape[-1], dtype=bool), -jnp.inf, logits)
    return z_t - others.max(axis=-1)


def _counted(labels: jax.Array, target: int | jax.Array, valid: jax.Array | None) -> jax.Array:
    keep = labels != target
    return keep if valid is None else keep & valid


def attack_hits(stamped_logits: jax.Array, labels: jax.Array, target: int | jax.Array,
                valid: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """(hits, count): non-target images classified as `target` with the pattern, and their number."""
    chex.assert_rank(stamped_logits, 2)
    keep = _counted(labels, target, valid)
    return ((stamped_logits.argmax(-1) == target) & keep).sum(), keep.sum()


def reliance_sum(clean_logits: jax.Array, stamped_logits: jax.Array, labels: jax.Array, target: int | jax.Array,
                 valid: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """(sum, count) of margin(stamped) - margin(clean) over the non-target images."""
    chex.assert_equal_shape([clean_logits, stamped_logits])
    keep = _counted(labels, target, valid)
    t = jnp.full(labels.shape, target, jnp.int32)
    delta = target_margin(stamped_logits, t) - target_margin(clean_logits, t)
    return jnp.where(keep, delta, 0.0).sum(), keep.sum()


def target_hits(logits: jax.Array, labels: jax.Array, target: int | jax.Array,
                valid: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """(hits, count): non-target images classified as `target` as they are (no pattern)."""
    return attack_hits(logits, labels, target, valid)


def attack_success_rate(stamped_logits: jax.Array, labels: jax.Array, target: int | jax.Array,
                        valid: jax.Array | None = None) -> jax.Array:
    """Share of the non-target images (of the `valid` ones) classified as `target` once stamped."""
    hits, count = attack_hits(stamped_logits, labels, target, valid)
    return hits / jnp.maximum(count, 1)


def reliance(clean_logits: jax.Array, stamped_logits: jax.Array, labels: jax.Array, target: int | jax.Array,
             valid: jax.Array | None = None) -> jax.Array:
    """Mean target-margin gain from the pattern over the non-target images."""
    total, count = reliance_sum(clean_logits, stamped_logits, labels, target, valid)
    return total / jnp.maximum(count, 1)


def _reached(a: float | None, threshold: float) -> bool:
    return a is not None and not math.isnan(a) and a >= threshold


def first_crossing_step(asr: Sequence[float | None], steps: Sequence[int], threshold: float = 0.5) -> int | None:
    """The first evaluated step whose ASR reaches `threshold`; None if it never does."""
    for s, a in zip(steps, asr):
        if _reached(a, threshold):
            return int(s)
    return None


def acquisition_step(asr: Sequence[float | None], steps: Sequence[int], threshold: float = 0.5) -> int | None:
    """The first evaluated step from which the ASR stays at or above `threshold` at every later
    evaluation (sustained acquisition); None if the last evaluation is below it (or missing: a
    diverged run has acquired nothing)."""
    chex.assert_equal(len(asr), len(steps))
    acquired = None
    for s, a in zip(steps, asr):
        if _reached(a, threshold):
            acquired = int(s) if acquired is None else acquired
        else:
            acquired = None
    return acquired


class BackdoorInputs(NamedTuple):
    """What the backdoor metrics of one run need besides the test set: the patterns, their target
    classes and each pattern's offset on every test image (random-location patterns move)."""

    patterns: Patterns
    targets: jax.Array  # (K,) int32
    offsets: jax.Array  # (K, B, E, 2) int32, laid out like the batched test set (B batches of E)


def backdoor_inputs(patterns: Patterns, targets: Sequence[int], num_batches: int, batch_size: int,
                    location_key: jax.Array) -> BackdoorInputs:
    """The inputs of `BackdoorMetrics` on a test set of `num_batches` x `batch_size` images:
    pattern k's test offsets come from `fold_in(location_key, k)` and the image's index."""
    n = num_batches * batch_size
    offsets = [image_offsets(jax.random.fold_in(location_key, k), jnp.arange(n), m).reshape(num_batches, batch_size, 2)
               for k, m in enumerate(patterns.max_offset)]
    offsets = jnp.stack(offsets) if offsets else jnp.zeros((0, num_batches, batch_size, 2), jnp.int32)
    return BackdoorInputs(patterns, jnp.asarray(targets, jnp.int32).reshape(-1), offsets)


@dataclasses.dataclass(frozen=True)
class BackdoorMetrics:
    """ASR, reliance and clean target rate of every pattern, as a test-set metric
    (`anatomy_jax.train.evaluation`): `sums` adds up one batch, `finalize` turns the sums into
    `attack_success_rate`, `reliance` and `clean_target_rate`, each a (K,) array."""

    names = ("attack_success_rate", "reliance", "clean_target_rate")

    def run_inputs(self, context) -> BackdoorInputs:
        """The run's patterns, targets and test offsets (`context`: anatomy_jax.train.MetricContext)."""
        return backdoor_inputs(context.patterns, context.targets, context.test.num_batches,
                               context.test.batch_size, context.key)

    def sums(self, apply_fn: Callable[[jax.Array], jax.Array], batch: jax.Array, x: jax.Array, y: jax.Array,
             valid: jax.Array, logits: jax.Array, inputs: BackdoorInputs) -> dict[str, jax.Array]:
        hits, margins, clean_hits, counts = [], [], [], []
        for k in range(inputs.targets.shape[0]):
            offsets = jax.lax.dynamic_index_in_dim(inputs.offsets[k], batch, keepdims=False)
            stamped = apply_fn(stamp(x, jnp.full(y.shape, k, jnp.int32), offsets, inputs.patterns))
            h, n = attack_hits(stamped, y, inputs.targets[k], valid)
            m, _ = reliance_sum(logits, stamped, y, inputs.targets[k], valid)
            hits.append(h)
            margins.append(m)
            clean_hits.append(target_hits(logits, y, inputs.targets[k], valid)[0])
            counts.append(n)
        if not hits:
            return {"hits": jnp.zeros(0, jnp.int32), "margins": jnp.zeros(0), "clean_hits": jnp.zeros(0, jnp.int32),
                    "counts": jnp.zeros(0, jnp.int32)}
        return {"hits": jnp.stack(hits), "margins": jnp.stack(margins), "clean_hits": jnp.stack(clean_hits),
                "counts": jnp.stack(counts)}

    def finalize(self, sums: dict[str, jax.Array]) -> dict[str, jax.Array]:
        counts = jnp.maximum(sums["counts"], 1)
        return {"attack_success_rate": sums["hits"] / counts, "reliance": sums["margins"] / counts,
                "clean_target_rate": sums["clean_hits"] / counts}
