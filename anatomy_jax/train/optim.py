"""Optimizers and learning-rate schedules.

The base learning rate and the schedule are *state*, not constants baked into the compiled step:
the last link of every chain is `scale_by_run_learning_rate`, whose state holds the run's learning
rate and the index of its schedule shape (every shape of `SCHEDULES` is compiled in and selected
with `lax.switch`). One compiled training step therefore serves every learning rate and schedule of
a sweep, and a run axis can be vmapped over both. Schedules are unit-peak shapes multiplied by that
rate.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import optax

OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("constant", "step", "cosine", "linear")


class RunLearningRateState(NamedTuple):
    count: jax.Array  # int32 scalar: updates applied so far
    learning_rate: jax.Array  # float32 scalar: the run's base learning rate
    schedule: jax.Array  # int32 scalar: index of the run's shape among the transformation's shapes


def scale_by_run_learning_rate(shapes: optax.Schedule | Sequence[optax.Schedule],
                               default: int = 0) -> optax.GradientTransformation:
    """Multiplies updates by -learning_rate * shapes[schedule](count), with learning_rate and the
    schedule index held in the state (`default` at init; `with_schedule` sets another)."""
    shapes = (shapes,) if callable(shapes) else tuple(shapes)

    def init(params):
        del params
        return RunLearningRateState(jnp.zeros([], jnp.int32), jnp.ones([], jnp.float32),
                                    jnp.asarray(default, jnp.int32))

    def update(updates, state, params=None):
        del params
        shape = shapes[0](state.count) if len(shapes) == 1 else jax.lax.switch(state.schedule, shapes, state.count)
        lr = state.learning_rate * shape
        updates = jax.tree.map(lambda g: (-lr * g).astype(g.dtype), updates)
        return updates, state._replace(count=optax.safe_increment(state.count))

    return optax.GradientTransformation(init, update)


def _set_run_state(opt_state, **fields):
    def set_fields(s):
        return s._replace(**fields) if isinstance(s, RunLearningRateState) else s

    return jax.tree.map(set_fields, opt_state, is_leaf=lambda s: isinstance(s, RunLearningRateState))


def with_learning_rate(opt_state, learning_rate: float | jax.Array):
    """Returns `opt_state` with the run's base learning rate set to `learning_rate`."""
    return _set_run_state(opt_state, learning_rate=jnp.asarray(learning_rate, jnp.float32))


def with_schedule(opt_state, schedule: str):
    """Returns `opt_state` (of a `make_optimizer` chain) with the run's schedule set to `schedule`."""
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}; choose one of {', '.join(SCHEDULES)}")
    return _set_run_state(opt_state, schedule=jnp.asarray(SCHEDULES.index(schedule), jnp.int32))


def schedule_shape(name: str, total_steps: int, warmup_steps: int = 0) -> optax.Schedule:
    """A unit-peak learning-rate shape over `total_steps`.

    constant: 1; step: 1, then x0.1 after 1/3 and again after 2/3 of the steps (the 50/100-of-150
    epochs schedule); cosine: cosine decay to 0; linear: linear decay to 0. With `warmup_steps`,
    a linear warm-up from 0 precedes the shape, which then spans the remaining steps.
    """
    if name not in SCHEDULES:
        raise ValueError(f"unknown schedule {name!r}; choose one of {', '.join(SCHEDULES)}")
    if not 0 <= warmup_steps < max(total_steps, 1):
        raise ValueError(f"warmup_steps must be in [0, steps), got {warmup_steps} of {total_steps}")
    n = max(total_steps - warmup_steps, 1)
    if name == "constant":
        shape = optax.constant_schedule(1.0)
    elif name == "step":
        shape = optax.piecewise_constant_schedule(1.0, {n // 3: 0.1, (2 * n) // 3: 0.1})
    elif name == "cosine":
        shape = optax.cosine_decay_schedule(1.0, n)
    else:
        shape = optax.linear_schedule(1.0, 0.0, n)
    if warmup_steps == 0:
        return shape
    return optax.join_schedules([optax.linear_schedule(0.0, 1.0, warmup_steps), shape], [warmup_steps])


def decay_steps(name: str, total_steps: int, warmup_steps: int = 0) -> list[int]:
    """The steps after which a `step` schedule has decayed (an update at count >= b uses the decayed
    rate, so a pattern acquired at evaluated step s <= b was acquired before that decay); [] for
    the schedules without discrete decays."""
    if name != "step":
        return []
    n = max(total_steps - warmup_steps, 1)
    return [warmup_steps + n // 3, warmup_steps + (2 * n) // 3]


def make_optimizer(
    name: str = "sgd",
    *,
    total_steps: int,
    schedule: str = "constant",
    warmup_steps: int = 0,
    momentum: float = 0.9,
    nesterov: bool = False,
    weight_decay: float = 0.0,
) -> optax.GradientTransformation:
    """SGD (coupled L2 weight decay, as in PyTorch) or Adam (decoupled weight decay, i.e. AdamW).

    The learning rate is set per run with `with_learning_rate`, the schedule (default `schedule`)
    with `with_schedule`: every shape of `SCHEDULES` is compiled in (see the module docstring).
    """
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)}")
    if weight_decay < 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
    if not 0.0 <= momentum < 1.0:
        raise ValueError(f"momentum must be in [0, 1), got {momentum}")
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}; choose one of {', '.join(SCHEDULES)}")
    shapes = scale_by_run_learning_rate([schedule_shape(s, total_steps, warmup_steps) for s in SCHEDULES],
                                        default=SCHEDULES.index(schedule))
    if name == "sgd":
        return optax.chain(optax.add_decayed_weights(weight_decay), optax.trace(momentum, nesterov), shapes)
    return optax.chain(optax.scale_by_adam(), optax.add_decayed_weights(weight_decay), shapes)
