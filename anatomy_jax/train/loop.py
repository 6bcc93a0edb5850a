"""The training loop of one run: fused chunks of steps, evaluation, observers, checkpoints.

The loop dispatches one compiled scan per chunk (a chunk ends at every evaluation and checkpoint
step), so Python never runs per step. At each evaluation step it records the metrics into a
history dict and calls the observers. A run whose loss or parameters stop being finite is stopped
and marked diverged: its remaining evaluation steps get `None` values.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple, Sequence

import jax
import numpy as np

from anatomy_jax.poison.patterns import Patterns
from anatomy_jax.poison.poisoning import PoisonPlan
from anatomy_jax.train.steps import EvalData, Trainer, TrainState

# Called at every evaluation step as observer(step, state, metrics). Observers read the state;
# they cannot change training (states are immutable). The next chunk donates the state's buffers,
# so an observer that keeps arrays must copy them (e.g. `jax.device_get`).
Observer = Callable[[int, TrainState, dict], None]


class RunData(NamedTuple):
    """The device-resident data of one run."""

    images: jax.Array  # (N, H, W, C) uint8 training images (clean)
    plan: PoisonPlan
    patterns: Patterns
    eval_data: EvalData
    targets: jax.Array  # (K,) int32 target class of each pattern


def empty_history() -> dict:
    return {"steps": [], "train_loss": [], "test_loss": [], "clean_accuracy": [], "attack_success_rate": [],
            "reliance": [], "diverged": False, "diverged_at_step": None}


def _chunk_ends(start: int, steps: int, every: Sequence[int]) -> list[int]:
    ends = {steps}
    for e in every:
        if e > 0:
            ends.update(range(e, steps + 1, e))
    return sorted(s for s in ends if s > start)


def _record(history: dict, step: int, train_loss: float | None, metrics: dict | None, num_patterns: int) -> None:
    history["steps"].append(step)
    history["train_loss"].append(train_loss)
    if metrics is None:
        history["test_loss"].append(None)
        history["clean_accuracy"].append(None)
        history["attack_success_rate"].append([None] * num_patterns)
        history["reliance"].append([None] * num_patterns)
        return
    history["test_loss"].append(float(metrics["test_loss"]))
    history["clean_accuracy"].append(float(metrics["clean_accuracy"]))
    history["attack_success_rate"].append([float(v) for v in metrics["attack_success_rate"]])
    history["reliance"].append([float(v) for v in metrics["reliance"]])


def train_loop(
    trainer: Trainer,
    state: TrainState,
    data: RunData,
    *,
    steps: int,
    eval_every: int,
    history: dict | None = None,
    observers: Sequence[Observer] = (),
    checkpoint_every: int = 0,
    on_checkpoint: Callable[[TrainState, dict], None] | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> tuple[TrainState, dict]:
    """Trains from `state.step` to `steps`; returns the final state and the metric history.

    `on_checkpoint(state, history)` is called every `checkpoint_every` steps (and not at the end:
    the caller decides what a finished run saves). `on_progress(n)` reports n more steps done.
    """
    if eval_every <= 0:
        raise ValueError(f"eval_every must be > 0, got {eval_every}")
    history = empty_history() if history is None else history
    num_patterns = int(data.targets.shape[0])
    start = int(state.step)
    eval_steps = [s for s in _chunk_ends(0, steps, [eval_every]) if s > start]
    losses_since_eval: list[np.ndarray] = []
    for end in _chunk_ends(start, steps, [eval_every, checkpoint_every]):
        if history["diverged"]:
            break
        done = int(state.step)
        state, losses, finite = trainer.train_steps(state, data.images, data.plan, data.patterns, end - done)
        losses_since_eval.append(np.asarray(losses))
        if on_progress is not None:
            on_progress(end - done)
        if not bool(finite):
            history["diverged"] = True
            history["diverged_at_step"] = end
            for s in (s for s in eval_steps if s >= end):
                _record(history, s, None, None, num_patterns)
            break
        if end in eval_steps:
            metrics = trainer.evaluate(state.params, state.batch_stats, data.eval_data, data.patterns, data.targets)
            metrics = jax.device_get(metrics)
            train_loss = float(np.concatenate(losses_since_eval).mean())
            losses_since_eval = []
            _record(history, end, train_loss, metrics, num_patterns)
            for observe in observers:
                observe(end, state, metrics)
        if checkpoint_every and end % checkpoint_every == 0 and end < steps and on_checkpoint is not None:
            on_checkpoint(state, history)
    return state, history


def acquisition_step(asr: Sequence[float | None], steps: Sequence[int], threshold: float = 0.5) -> int | None:
    """The first evaluated step whose ASR reaches `threshold`; None if it never does."""
    for s, a in zip(steps, asr):
        if a is not None and not math.isnan(a) and a >= threshold:
            return int(s)
    return None

