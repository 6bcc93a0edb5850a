"""Runs: what distinguishes one training run from another, and the device data it trains on.

A `RunSpec` is a run as a study's grid describes it: its seed, learning rate and, for the pattern
study, its poison specs. `plan_run` draws its poison plan (the step that can fail for bad settings,
so studies call it for every run before they write anything) and `prepare_run` adds the initial
train state and the device data. Runs that share a model, an optimizer, the clean images and the
test set stack into one `SweepData` and train as one program (`anatomy_jax.train.loop`).

Keys: a run's seed s gives the initialisation and the data order (`jax.random.key(s)`, split in
two); the poison selection and pattern positions come from `poison_seed` (default: s), so a study
can hold the poisoned set fixed across initialisations.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple, Sequence

import chex
import jax
import jax.numpy as jnp
import numpy as np

from anatomy_jax.data.datasets import Dataset
from anatomy_jax.poison.metrics import BackdoorInputs, BackdoorMetrics
from anatomy_jax.poison.patterns import Patterns, make_patterns
from anatomy_jax.poison.poisoning import PoisonPlan, PoisonSpec, clean_plan, plan_poison
from anatomy_jax.train.config import TrainConfig
from anatomy_jax.train.evaluation import ClassificationMetrics, Metric, MetricContext, TestSet, metric_inputs
from anatomy_jax.train.optim import with_schedule
from anatomy_jax.train.steps import Trainer, TrainState


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """One run of a study: `config` (how it trains), seed, learning rate, poison specs (none for
    clean training) and `grid`, the study's own description of the run (recorded in results)."""

    config: TrainConfig
    seed: int
    learning_rate: float
    poisons: tuple[PoisonSpec, ...] = ()
    poison_seed: int | None = None
    grid: dict[str, Any] = dataclasses.field(default_factory=dict, compare=False)

    def keys(self) -> tuple[jax.Array, jax.Array, jax.Array]:
        """(init key, data-order key, poison key)."""
        init_key, data_key = jax.random.split(jax.random.key(self.seed))
        poison_seed = self.seed if self.poison_seed is None else self.poison_seed
        return init_key, data_key, jax.random.fold_in(jax.random.key(poison_seed), 0x9015)


class RunPlan(NamedTuple):
    """A run's poison plan, its patterns and the realised poison statistics (one dict per spec)."""

    plan: PoisonPlan
    patterns: Patterns
    stats: list[dict]


def plan_run(spec: RunSpec, data: Dataset) -> RunPlan:
    """Draws the run's poison plan; raises ValueError when a spec cannot be realised on `data`."""
    if not spec.poisons:
        return RunPlan(clean_plan(data.train.labels), make_patterns([], data.image_shape), [])
    _, _, poison_key = spec.keys()
    plan, stats = plan_poison(poison_key, data.train.labels, list(spec.poisons), data.num_classes,
                              data.image_shape)
    for st, p in zip(stats, spec.poisons):
        st.update(name=p.pattern.name, target=p.target, frequency=p.frequency,
                  correlation=1.0 if p.clean_label else p.correlation)
    return RunPlan(plan, make_patterns([p.pattern for p in spec.poisons], data.image_shape), stats)


def run_metrics(poisoned: bool) -> tuple[Metric, ...]:
    """The default test metrics of a run: clean accuracy and loss, plus ASR and reliance when
    poisoned. Studies pass their own composition to `prepare_run` / `Study.prepare`."""
    return (ClassificationMetrics(), BackdoorMetrics()) if poisoned else (ClassificationMetrics(),)


def metrics_for(metric_inputs: tuple) -> tuple[Metric, ...]:
    """The default metrics `prepare_run` laid out `metric_inputs` for (for `train_loop` callers
    that pass none)."""
    return run_metrics(any(isinstance(i, BackdoorInputs) for i in metric_inputs))


class RunData(NamedTuple):
    """The device-resident data of one run."""

    images: jax.Array  # (N, H, W, C) uint8 training images (clean)
    plan: PoisonPlan
    patterns: Patterns  # stamped on the training batches (K = 0 for clean runs)
    test: TestSet
    metric_inputs: tuple  # what each of the study's metrics needs (see `run_metrics`)

    @property
    def backdoor(self) -> BackdoorInputs | None:
        """The backdoor metrics' inputs (patterns, targets, test offsets), None for a clean run."""
        return next((i for i in self.metric_inputs if isinstance(i, BackdoorInputs)), None)


class PreparedRun(NamedTuple):
    data: RunData
    stats: list[dict]
    state: TrainState


def prepare_run(trainer: Trainer, spec: RunSpec, train_images: jax.Array, test: TestSet,
                planned: RunPlan, metrics: Sequence[Metric] | None = None) -> PreparedRun:
    """The device data and the initial state of a planned run, with the inputs of `metrics`
    (default: `run_metrics`) laid out for its test set."""
    init_key, data_key, poison_key = spec.keys()
    metrics = run_metrics(bool(spec.poisons)) if metrics is None else metrics
    targets = jnp.asarray([p.target for p in spec.poisons], jnp.int32)
    inputs = metric_inputs(metrics, MetricContext(planned.patterns, targets, test, jax.random.fold_in(poison_key, 1)))
    state = trainer.init(init_key, data_key, train_images, spec.learning_rate)
    # the run's schedule is optimizer state, so runs that differ only in it share a trainer (a sweep)
    state = state._replace(opt_state=with_schedule(state.opt_state, spec.config.schedule))
    return PreparedRun(RunData(train_images, planned.plan, planned.patterns, test, inputs), planned.stats, state)


class SweepData(NamedTuple):
    """The device data of a sweep: shared arrays once, per-run arrays with a leading run axis."""

    images: jax.Array  # (N, H, W, C) uint8, shared
    plans: PoisonPlan  # (R, N) per run
    patterns: Patterns  # shared (the runs of a sweep stamp the same patterns)
    test: TestSet  # shared
    metric_inputs: tuple  # per run (leading axis R)

    @property
    def num_runs(self) -> int:
        return int(self.plans.labels.shape[0])

    def runs(self) -> list[RunData]:
        """The data of each run, as `train_loop` takes it."""
        return [RunData(self.images, plan, self.patterns, self.test, inputs)
                for plan, inputs in unstack_tree((self.plans, self.metric_inputs))]


def stack_trees(trees: Sequence[Any]) -> Any:
    """Stacks pytrees of the same structure along a new leading axis (on the host, then one
    transfer: eager `jnp.stack` would compile a program per leaf shape and run count)."""
    host = jax.device_get(list(trees))
    return jax.device_put(jax.tree.map(lambda *xs: np.stack(xs), *host))


def unstack_tree(tree: Any) -> list[Any]:
    """The inverse of `stack_trees`: one device pytree per index of the leading axis."""
    host = jax.device_get(tree)
    n = jax.tree.leaves(host)[0].shape[0]
    return [jax.device_put(jax.tree.map(lambda x, i=i: x[i], host)) for i in range(n)]


def stack_runs(runs: Sequence[RunData]) -> SweepData:
    """One SweepData from the RunData of runs that share images, patterns and the test set."""
    if not runs:
        raise ValueError("a sweep needs at least one run")
    first = runs[0]
    for r in runs[1:]:
        chex.assert_equal_shape([first.images, r.images])
        if jax.tree.structure(r.metric_inputs) != jax.tree.structure(first.metric_inputs):
            raise ValueError("runs of one sweep must have the same metrics (all poisoned or all clean)")
        if not np.array_equal(np.asarray(first.patterns.image), np.asarray(r.patterns.image)):
            raise ValueError("runs of one sweep must stamp the same patterns")
    plans, inputs = stack_trees([(r.plan, r.metric_inputs) for r in runs])
    return SweepData(first.images, plans, first.patterns, first.test, inputs)


def pad_runs(items: Sequence[Any], multiple: int) -> list[Any]:
    """`items` padded to a multiple of `multiple` by repeating the last one (padding runs train
    like the run they copy and are dropped from the results)."""
    items = list(items)
    return items + [items[-1]] * (-len(items) % multiple)
