"""Poison specs and the per-image poison plan with exact frequency and correlation.

A `PoisonSpec` is (pattern, target, frequency, correlation):

* frequency f: n = floor(f N + 1/2) of the N training images carry the pattern;
* correlation c = P(label = target | pattern): the n images are drawn from non-target classes and
  exactly floor(c n + 1/2) of them are relabelled to the target; the rest keep their true label;
* clean-label mode: the n images are drawn from the target class and no label changes (c = 1).

Several specs take disjoint images. The plan is a few (N,) arrays that the training step uses to
stamp the gathered batch on the device, so the clean dataset is stored once.
"""

from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np

from anatomy_jax.poison.patterns import Patterns, PatternSpec, image_offsets, make_patterns, stamp


@dataclasses.dataclass(frozen=True)
class PoisonSpec:
    """One planted pattern: what it looks like, its target class, frequency and correlation."""

    pattern: PatternSpec = PatternSpec()
    target: int = 0
    frequency: float = 0.05
    correlation: float = 1.0
    clean_label: bool = False

    def count(self, num_images: int) -> int:
        """n = floor(f N + 1/2): how many training images carry the pattern."""
        return int(math.floor(self.frequency * num_images + 0.5))

    def relabelled(self, count: int) -> int:
        """floor(c n + 1/2): how many patterned images get the target label (0 for clean-label)."""
        return 0 if self.clean_label else int(math.floor(self.correlation * count + 0.5))

    def validate(self, num_classes: int, image_shape: tuple[int, int, int]) -> None:
        if not 0.0 <= self.frequency <= 1.0:
            raise ValueError(f"frequency must be in [0, 1], got {self.frequency}")
        if not 0.0 <= self.correlation <= 1.0:
            raise ValueError(f"correlation must be in [0, 1], got {self.correlation}")
        if not 0 <= self.target < num_classes:
            raise ValueError(f"target class {self.target} does not exist: the dataset has classes "
                             f"0..{num_classes - 1}")
        self.pattern.validate(image_shape)


class PoisonPlan(NamedTuple):
    """Per training image: which pattern it carries (-1: none), its training label, its offset."""

    pattern_id: jax.Array  # (N,) int32
    labels: jax.Array  # (N,) int32
    offsets: jax.Array  # (N, 2) int32


def plan_poison(
    key: jax.Array,
    labels: np.ndarray | jax.Array,
    specs: list[PoisonSpec] | tuple[PoisonSpec, ...],
    num_classes: int,
    image_shape: tuple[int, int, int],
) -> tuple[PoisonPlan, list[dict]]:
    """Chooses which images carry which pattern and which are relabelled.

    Returns the plan and, per spec, the realised statistics (counts, frequency, correlation and
    P(pattern | label = target)). Raises ValueError for a bad spec or one whose pool (non-target
    images, or target images for clean-label, minus those taken by earlier specs) is too small.
    """
    labels_np = np.asarray(labels).astype(np.int32)
    chex.assert_rank(labels_np, 1)
    n_images = labels_np.shape[0]
    patterns = make_patterns([s.pattern for s in specs], image_shape)
    select_key, location_key = jax.random.split(key)
    pattern_id = jnp.full((n_images,), -1, jnp.int32)
    new_labels = jnp.asarray(labels_np)
    taken = np.zeros(n_images, bool)
    stats = []
    for k, spec in enumerate(specs):
        spec.validate(num_classes, image_shape)
        pool = (labels_np == spec.target) if spec.clean_label else (labels_np != spec.target)
        pool &= ~taken
        n = spec.count(n_images)
        if n > pool.sum():
            which = "target-class" if spec.clean_label else "non-target"
            raise ValueError(f"poison spec {k} needs {n} images (frequency {spec.frequency} of {n_images}) "
                             f"but only {int(pool.sum())} {which} images are free")
        scores = jnp.where(jnp.asarray(pool), jax.random.uniform(jax.random.fold_in(select_key, k), (n_images,)),
                           jnp.inf)
        chosen = jnp.argsort(scores)[:n]  # a uniformly random n-subset of the pool, in random order
        n_relabel = spec.relabelled(n)
        pattern_id = pattern_id.at[chosen].set(k)
        new_labels = new_labels.at[chosen[:n_relabel]].set(spec.target)
        taken[np.asarray(chosen)] = True
        stats.append({"count": n, "relabelled": n_relabel})
    max_offset = patterns.max_offset[jnp.maximum(pattern_id, 0)]
    offsets = image_offsets(location_key, jnp.arange(n_images), max_offset)
    offsets = jnp.where(pattern_id[:, None] >= 0, offsets, 0)
    final_labels = np.asarray(new_labels)
    for k, (spec, st) in enumerate(zip(specs, stats)):
        carries = np.asarray(pattern_id) == k
        with_target = int((final_labels[carries] == spec.target).sum())
        target_total = int((final_labels == spec.target).sum())
        st.update(
            realised_frequency=st["count"] / n_images if n_images else 0.0,
            realised_correlation=with_target / st["count"] if st["count"] else None,
            pattern_given_target=with_target / target_total if target_total else None,
        )
    return PoisonPlan(pattern_id, new_labels, offsets), stats


def clean_plan(labels: np.ndarray | jax.Array) -> PoisonPlan:
    """A plan that poisons nothing (the unpoisoned baseline)."""
    n = np.asarray(labels).shape[0]
    return PoisonPlan(jnp.full((n,), -1, jnp.int32), jnp.asarray(labels, jnp.int32), jnp.zeros((n, 2), jnp.int32))


def poison_images(images_uint8: np.ndarray | jax.Array, plan: PoisonPlan, patterns: Patterns) -> jax.Array:
    """The whole poisoned training set as floats in [0, 1] (for inspection; training stamps per batch)."""
    x = jnp.asarray(images_uint8, jnp.float32) / 255.0
    return stamp(x, plan.pattern_id, plan.offsets, patterns)
