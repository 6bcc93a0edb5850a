"""The training loop: one run (`train_loop`) or many (`train_sweep`), evaluated and checkpointed.

The loop advances in chunks that end at every evaluation and checkpoint step. At each evaluation
step the metrics go into each run's history and the observers are called; `train_loss` there is
the mean of the training losses since the previous evaluation. Those pending losses are part of
what a checkpoint saves (`on_checkpoint(states, histories, pending)`), so a run resumed from any
checkpoint records the same series as one that never stopped. A run whose loss or parameters stop
being finite is stopped and marked diverged: its remaining evaluation steps get `None` values.
`should_stop()` is polled between steps (between fused chunks on GPU/TPU): when it turns true the
loop calls `on_checkpoint` at the step it reached and returns, so a signal handler can save a run.
"""

from __future__ import annotations

from typing import Callable, Sequence

import chex
import jax
import numpy as np
from jax.sharding import Mesh

from anatomy_jax.train.evaluation import ClassificationMetrics, Metric
from anatomy_jax.train.runs import RunData, SweepData, metrics_for, stack_runs, stack_trees, unstack_tree
from anatomy_jax.train.sharding import to_host
from anatomy_jax.train.steps import Trainer, TrainState
from anatomy_jax.train.strategies import StopCheck, _never, make_engine

# Called at every evaluation step as observer(step, state, metrics), with host (numpy) copies of
# the run's state and metrics. Observers read them; they cannot change training.
Observer = Callable[[int, TrainState, dict], None]
# The same for a sweep: `states` stacked over the runs of the sweep (leading axis), and the
# stacked metrics. `per_run` adapts single-run observers.
SweepObserver = Callable[[int, TrainState, dict], None]
# on_checkpoint(stacked states, histories, pending losses (R, t) since the last evaluation)
CheckpointFn = Callable[[TrainState, list, np.ndarray], None]

DEFAULT_METRICS = (ClassificationMetrics(),)


def metric_names(metrics: Sequence[Metric]) -> list[str]:
    """The names of the values `metrics` produce, in order."""
    return [name for m in metrics for name in m.names]


def empty_history(metrics: Sequence[Metric] = DEFAULT_METRICS) -> dict:
    """A run's history before its first evaluation: one list per recorded series."""
    return {"steps": [], "train_loss": [], **{name: [] for name in metric_names(metrics)}, "diverged": False,
            "diverged_at_step": None}


def chunk_ends(start: int, steps: int, every: Sequence[int]) -> list[int]:
    """The steps after `start` where a chunk ends: every multiple of each interval, and `steps`."""
    ends = {steps}
    for e in every:
        if e > 0:
            ends.update(range(e, steps + 1, e))
    return sorted(s for s in ends if s > start)


def _record(history: dict, step: int, train_loss: float | None, metrics: dict | None, names: Sequence[str]) -> None:
    """Appends one evaluation to a history: a value per metric name (None for a diverged run)."""
    history["steps"].append(step)
    history["train_loss"].append(train_loss)
    for name in names:
        value = None if metrics is None else np.asarray(metrics[name])
        if value is None:
            history[name].append(None)
        elif value.ndim:
            history[name].append([float(v) for v in value])
        else:
            history[name].append(float(value))


def per_run(observers: Sequence[Observer]) -> SweepObserver:
    """A sweep observer that calls `observers[r](step, state_r, metrics_r)` for each run r (the
    single-run observers of `train_loop`, e.g. an RWCTracker or a GradientProbe per run)."""

    def observe(step: int, states: TrainState, metrics: dict) -> None:
        for r, observer in enumerate(observers):
            observer(step, jax.tree.map(lambda x: x[r], states), jax.tree.map(lambda x: x[r], metrics))

    return observe


def train_sweep(
    trainer: Trainer,
    states: TrainState,
    data: SweepData,
    *,
    steps: int,
    eval_every: int,
    strategy: str,
    mesh: Mesh | None = None,
    metrics: Sequence[Metric] | None = None,
    histories: list[dict] | None = None,
    pending: np.ndarray | None = None,
    observers: Sequence[SweepObserver] = (),
    checkpoint_every: int = 0,
    on_checkpoint: CheckpointFn | None = None,
    on_progress: Callable[[int], None] | None = None,
    should_stop: StopCheck = _never,
) -> tuple[TrainState, list[dict]]:
    """Trains every run of `data` from `states.step` to `steps`; returns the stacked states and one
    metric history per run.

    `states` are stacked TrainStates (`stack_trees`), all at the same step; `metrics` are the test
    metrics whose inputs `data.metric_inputs` holds (default: those `prepare_run` laid out).
    `histories` and `pending` continue a checkpointed sweep. A run whose loss or parameters stop being finite is marked diverged (its
    later evaluations are None) and leaves every other run unchanged. `on_checkpoint` is called
    every `checkpoint_every` steps before the end, and where `should_stop()` stopped the sweep.
    """
    if eval_every <= 0:
        raise ValueError(f"eval_every must be > 0, got {eval_every}")
    if data.images.shape[0] < trainer.batch_size:
        raise ValueError(f"batch size {trainer.batch_size} exceeds the {data.images.shape[0]} training images")
    num_runs = data.num_runs
    metrics = metrics_for(data.metric_inputs) if metrics is None else tuple(metrics)
    chex.assert_axis_dimension(states.step, 0, num_runs)
    start = int(np.max(to_host(states.step)))  # a diverged run's step stops where it diverged
    all_ends = chunk_ends(0, steps, [eval_every, checkpoint_every])
    ends = [e for e in all_ends if e > start]
    # one compiled program for every chunk length: the longest a sweep of these intervals can have
    max_steps = max(np.diff([0] + all_ends))
    engine = make_engine(strategy, trainer, metrics, states, data, mesh, int(max_steps))
    histories = [empty_history(metrics) for _ in range(num_runs)] if histories is None else histories
    names = metric_names(metrics)
    eval_steps = [s for s in chunk_ends(0, steps, [eval_every]) if s > start]
    pending = np.zeros((num_runs, 0), np.float32) if pending is None else np.asarray(pending, np.float32)
    done = start
    for end in ends:
        active = np.array([not h["diverged"] for h in histories])
        if not active.any():
            break
        losses, finite = engine.advance(end - done, active, should_stop)
        pending = np.concatenate([pending, losses], axis=1)
        if on_progress is not None:
            on_progress(losses.shape[1])
        stopped = done + losses.shape[1] < end
        done += losses.shape[1]
        for r in np.flatnonzero(active & ~finite):
            histories[r]["diverged"], histories[r]["diverged_at_step"] = True, done
            for s in (s for s in eval_steps if s >= done):
                _record(histories[r], s, None, None, names)
        if stopped:
            if on_checkpoint is not None:
                on_checkpoint(engine.stacked_state(), histories, pending)
            break
        if end in eval_steps:
            values = engine.evaluate()
            train_loss = pending.mean(axis=1)
            pending = np.zeros((num_runs, 0), np.float32)
            for r in np.flatnonzero(active & finite):
                _record(histories[r], end, float(train_loss[r]), jax.tree.map(lambda x, r=r: x[r], values), names)
            if observers:
                host_states = to_host(engine.stacked_state())
                for observe in observers:
                    observe(end, host_states, values)
        stop_now = end < steps and should_stop()  # polled once (a collective in a multi-host job)
        periodic = checkpoint_every and end % checkpoint_every == 0 and end < steps
        if on_checkpoint is not None and (periodic or stop_now):
            on_checkpoint(engine.stacked_state(), histories, pending)
        if stop_now:
            break
    return engine.stacked_state(), histories


def train_loop(
    trainer: Trainer,
    state: TrainState,
    data: RunData,
    *,
    steps: int,
    eval_every: int,
    metrics: Sequence[Metric] | None = None,
    history: dict | None = None,
    observers: Sequence[Observer] = (),
    checkpoint_every: int = 0,
    on_checkpoint: Callable[[TrainState, dict], None] | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> tuple[TrainState, dict]:
    """Trains one run from `state.step` to `steps`; returns the final state and its metric history.

    A one-run sweep with the loop strategy (the run's own jitted steps). `on_checkpoint(state,
    history)` is called every `checkpoint_every` steps (and not at the end: the caller decides what
    a finished run saves). `on_progress(n)` reports n more steps done.
    """
    checkpoint = None if on_checkpoint is None else (
        lambda states, histories, pending: on_checkpoint(unstack_tree(states)[0], histories[0]))
    states, histories = train_sweep(
        trainer, stack_trees([state]), stack_runs([data]), steps=steps, eval_every=eval_every, strategy="loop",
        metrics=metrics, histories=None if history is None else [history],
        observers=[per_run(observers)] if observers else (), checkpoint_every=checkpoint_every,
        on_checkpoint=checkpoint, on_progress=on_progress)
    return unstack_tree(states)[0], histories[0]
