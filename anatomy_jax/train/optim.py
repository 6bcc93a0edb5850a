"""Optimizers and learning-rate schedules.

The base learning rate is *state*, not a constant baked into the compiled step: the last link of
every chain is `scale_by_run_learning_rate`, whose state holds the run's learning rate. One
compiled training step therefore serves every learning rate of a sweep, and a run axis can be
vmapped over learning rates later. Schedules are unit-peak shapes multiplied by that rate.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("constant", "step", "cosine", "linear")


class RunLearningRateState(NamedTuple):
    count: jax.Array  # int32 scalar: updates applied so far
    learning_rate: jax.Array  # float32 scalar: the run's base learning rate


def scale_by_run_learning_rate(shape: optax.Schedule) -> optax.GradientTransformation:
    """Multiplies updates by -learning_rate * shape(count), with learning_rate held in the state."""

    def init(params):
        del params
        return RunLearningRateState(jnp.zeros([], jnp.int32), jnp.ones([], jnp.float32))

    def update(updates, state, params=None):
        del params
        lr = state.learning_rate * shape(state.count)
        updates = jax.tree.map(lambda g: (-lr * g).astype(g.dtype), updates)
        return updates, RunLearningRateState(optax.safe_increment(state.count), state.learning_rate)

    return optax.GradientTransformation(init, update)


def with_learning_rate(opt_state, learning_rate: float | jax.Array):
    """Returns `opt_state` with the run's base learning rate set to `learning_rate`."""
    lr = jnp.asarray(learning_rate, jnp.float32)

    def set_lr(s):
        return s._replace(learning_rate=lr) if isinstance(s, RunLearningRateState) else s

    return jax.tree.map(set_lr, opt_state, is_leaf=lambda s: isinstance(s, RunLearningRateState))


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

    The learning rate is set per run with `with_learning_rate` (see the module docstring).
    """
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)}")
    if weight_decay < 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
    if not 0.0 <= momentum < 1.0:
        raise ValueError(f"momentum must be in [0, 1), got {momentum}")
    shape = schedule_shape(schedule, total_steps, warmup_steps)
    if name == "sgd":
        return optax.chain(optax.add_decayed_weights(weight_decay), optax.trace(momentum, nesterov),
                           scale_by_run_learning_rate(shape))
    return optax.chain(optax.scale_by_adam(), optax.add_decayed_weights(weight_decay),
                       scale_by_run_learning_rate(shape))
