"""What a run's training loop works with: its device data, its metric history, observers.

The loop itself is `train_sweep` (anatomy_jax.train.sweep), which trains one run or many; its
chunks end at every evaluation and checkpoint step. At each evaluation step the metrics go into
the history dict and the observers are called. A run whose loss or parameters stop being finite
is stopped and marked diverged: its remaining evaluation steps get `None` values.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple, Sequence

import jax

from anatomy_jax.poison.patterns import Patterns
from anatomy_jax.poison.poisoning import PoisonPlan
from anatomy_jax.train.steps import EvalData, TrainState

# Called at every evaluation step as observer(step, state, metrics), with host (numpy) copies of
# the run's state and metrics. Observers read them; they cannot change training.
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


def acquisition_step(asr: Sequence[float | None], steps: Sequence[int], threshold: float = 0.5) -> int | None:
    """The first evaluated step whose ASR reaches `threshold`; None if it never does."""
    for s, a in zip(steps, asr):
        if a is not None and not math.isnan(a) and a >= threshold:
            return int(s)
    return None

