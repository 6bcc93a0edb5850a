"""Test-set evaluation composed from metrics: one pass over the batched test set, shared logits.

A metric is a small hashable object with two pure functions (like an optax transformation):
`sums(apply_fn, batch, x, y, valid, logits, inputs)` returns the sums of one test batch (`batch` is
its index, for inputs laid out per batch) and `finalize(sums)` turns the totals into named
values. `evaluate` computes the clean logits once per batch and hands them to every metric, so
the clean metrics here and the backdoor metrics of `anatomy_jax.poison.metrics` share them.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple, Protocol, Sequence

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax


class TestSet(NamedTuple):
    """The test split on the device, padded to whole batches (`valid` marks the real images)."""

    images: jax.Array  # (B, E, H, W, C) uint8
    labels: jax.Array  # (B, E) int32
    valid: jax.Array  # (B, E) bool

    @property
    def num_batches(self) -> int:
        return int(self.labels.shape[0])

    @property
    def batch_size(self) -> int:
        return int(self.labels.shape[1])


def batch_test_set(images: Any, labels: Any, batch_size: int = 500) -> TestSet:
    """Pads the test split (N, H, W, C) to whole batches of `min(batch_size, N)` images."""
    images, labels = np.asarray(images), np.asarray(labels, np.int32)
    chex.assert_rank(images, 4)
    chex.assert_shape(labels, (images.shape[0],))
    n = labels.shape[0]
    e = min(batch_size, n)
    b = -(-n // e)
    pad = b * e - n
    images = np.pad(images, ((0, pad), (0, 0), (0, 0), (0, 0)))
    valid = np.arange(b * e) < n
    return TestSet(jnp.asarray(images.reshape(b, e, *images.shape[1:])),
                   jnp.asarray(np.pad(labels, (0, pad)).reshape(b, e)), jnp.asarray(valid.reshape(b, e)))


def to_float(images: jax.Array) -> jax.Array:
    """uint8 0..255 -> float32 0..1 (models see floats in [0, 1])."""
    return images.astype(jnp.float32) / 255.0


class MetricContext(NamedTuple):
    """What a metric may draw its per-run inputs from (`Metric.run_inputs`)."""

    patterns: Any  # the run's Patterns (K may be 0)
    targets: jax.Array  # (K,) int32 target class of each pattern
    test: TestSet
    key: jax.Array  # the run's key for metric randomness (e.g. where random-location patterns sit)


class Metric(Protocol):
    """A test metric. Optionally also `run_inputs(context: MetricContext)`: the per-run arrays its
    `sums` receive as `inputs` (a metric without it gets None)."""

    names: tuple[str, ...]  # the values `finalize` returns

    def sums(self, apply_fn: Callable[[jax.Array], jax.Array], batch: jax.Array, x: jax.Array, y: jax.Array,
             valid: jax.Array, logits: jax.Array, inputs: Any) -> dict[str, jax.Array]: ...

    def finalize(self, sums: dict[str, jax.Array]) -> dict[str, jax.Array]: ...


@dataclasses.dataclass(frozen=True)
class ClassificationMetrics:
    """`clean_accuracy` and `test_loss` (mean cross entropy) on the valid test images."""

    names = ("clean_accuracy", "test_loss")

    def sums(self, apply_fn, batch, x, y, valid, logits, inputs) -> dict[str, jax.Array]:
        del apply_fn, batch, x, inputs
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, y)
        return {"correct": ((logits.argmax(-1) == y) & valid).sum(), "loss": jnp.where(valid, loss, 0.0).sum(),
                "count": valid.sum()}

    def finalize(self, sums: dict[str, jax.Array]) -> dict[str, jax.Array]:
        n = jnp.maximum(sums["count"], 1)
        return {"clean_accuracy": sums["correct"] / n, "test_loss": sums["loss"] / n}


def metric_inputs(metrics: Sequence[Metric], context: MetricContext) -> tuple:
    """The per-run inputs of each metric, in order (None for metrics that need none)."""
    return tuple(m.run_inputs(context) if hasattr(m, "run_inputs") else None for m in metrics)


def evaluate(apply_fn: Callable[[jax.Array], jax.Array], test: TestSet, metrics: Sequence[Metric],
             inputs: Sequence[Any]) -> dict[str, jax.Array]:
    """Every metric of `metrics` on the test set (`inputs[i]` is what metric i needs, or None).

    Traceable: call it inside jit (the sweep does, vmapped over runs). Returns one flat dict.
    """
    if len(metrics) != len(inputs):
        raise ValueError(f"{len(metrics)} metrics but {len(inputs)} metric inputs")

    def batch_sums(b, x_u8, y, valid):
        x = to_float(x_u8)
        logits = apply_fn(x)
        return tuple(m.sums(apply_fn, b, x, y, valid, logits, inp) for m, inp in zip(metrics, inputs))

    xs = (jnp.arange(test.num_batches), test.images, test.labels, test.valid)
    shapes = jax.eval_shape(batch_sums, *jax.tree.map(lambda a: a[0], xs))
    zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)

    def body(carry, batch):
        return jax.tree.map(jnp.add, carry, batch_sums(*batch)), None

    totals, _ = jax.lax.scan(body, zeros, xs)
    out: dict[str, jax.Array] = {}
    for m, s in zip(metrics, totals):
        out.update(m.finalize(s))
    return out
