"""Train state and the jitted training step (fused into scans of steps).

Everything a step needs lives on the device: the uint8 training images, the poison plan (which
image carries which pattern, its training label and pattern offset) and the patterns. Each step
draws its batch from the epoch's permutation (`fold_in(data_key, epoch)`), gathers it, stamps the
patterns on the poisoned images, augments, and updates, all inside one compiled program. Runs of
one sweep share the compiled program: the learning rate is optimizer state and the poison plan is
an argument, so nothing about a run is baked into the compilation.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, NamedTuple

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from anatomy_jax.adversarial.attacks import NORMS, pgd
from anatomy_jax.data.augment import augment
from anatomy_jax.poison.patterns import Patterns, stamp
from anatomy_jax.poison.poisoning import PoisonPlan
from anatomy_jax.train.evaluation import to_float
from anatomy_jax.train.optim import with_learning_rate


class TrainState(NamedTuple):
    """Everything that changes during training (a plain pytree: checkpointable, vmappable)."""

    step: jax.Array  # int32 scalar
    params: Any
    batch_stats: Any  # {} for models without batch norm
    opt_state: Any
    rng: jax.Array  # uint32 key data of the data-order / augmentation stream
    order: jax.Array  # (N,) int32: this epoch's permutation of the training images


def cross_entropy(logits: jax.Array, labels: jax.Array, label_smoothing: float = 0.0) -> jax.Array:
    """Mean softmax cross entropy with optional label smoothing."""
    targets = optax.smooth_labels(jax.nn.one_hot(labels, logits.shape[-1]), label_smoothing) \
        if label_smoothing else jax.nn.one_hot(labels, logits.shape[-1])
    return optax.softmax_cross_entropy(logits, targets).mean()


class AdversarialTraining(NamedTuple):
    """PGD adversarial training (Madry et al. 2018): every training batch is replaced by its PGD
    examples against the current parameters before the update (images in [0, 1], eps on that scale).
    The attack uses the batch's own batch-norm statistics and does not update the running ones."""

    eps: float
    steps: int = 7
    step_size: float | None = None  # default 2.5 eps / steps
    norm: str = "linf"

    def validate(self) -> None:
        if not self.eps > 0 or self.steps < 1:
            raise ValueError(f"adversarial training needs eps > 0 and steps >= 1, got {self.eps} and {self.steps}")
        if self.norm not in NORMS:
            raise ValueError(f"unknown norm {self.norm!r}; choose one of {', '.join(NORMS)}")
        if self.step_size is not None and not self.step_size > 0:
            raise ValueError(f"step_size must be > 0, got {self.step_size}")

    @property
    def size(self) -> float:
        return self.step_size if self.step_size is not None else 2.5 * self.eps / self.steps


@functools.partial(jax.jit, static_argnums=(0, 2))
def _init_variables(model: nn.Module, init_key: jax.Array, image_shape: tuple[int, ...]) -> Any:
    """The model's variables, jitted and cached per (model, image shape): flax modules compare by
    value, so every trainer of the same model shares one compilation (an eager init compiles every
    initializer op separately, ~16 s for ResNeXt-29 on CPU)."""
    return model.init(init_key, jnp.zeros((1, *image_shape), jnp.float32), train=False)


def check_fused_steps(num_steps: int, max_steps: int) -> None:
    """A fused chunk runs 1 to `max_steps` steps (the length its program was compiled for)."""
    if not 1 <= num_steps <= max_steps:
        raise ValueError(f"a fused chunk takes 1 to {max_steps} steps, got {num_steps}")


@jax.jit
def all_finite(losses: jax.Array, params: Any) -> jax.Array:
    """Whether the losses and every parameter are finite (a run that fails this diverged)."""
    leaves = [jnp.isfinite(losses).all()] + [jnp.isfinite(p).all() for p in jax.tree.leaves(params)]
    return jnp.stack(leaves).all()


@dataclasses.dataclass(frozen=True, eq=False)
class Trainer:
    """The static part of training (model, optimizer, batch and augmentation settings).

    Its methods are pure functions of arrays. The compiled step and evaluation are cached per
    Trainer (it is a static argument) and reused by every run that shares it.
    """

    model: nn.Module
    tx: optax.GradientTransformation
    batch_size: int = 128
    crop_padding: int = 0
    flip: bool = False
    label_smoothing: float = 0.0
    eval_batch_size: int = 500
    fuse_steps: bool | None = None
    data_axis: str | None = None  # inside shard_map: the mesh axis that splits each batch
    adversarial: AdversarialTraining | None = None  # PGD adversarial training when set

    def __post_init__(self):
        if self.adversarial is not None:
            self.adversarial.validate()

    def init(self, init_key: jax.Array, data_key: jax.Array, images: jax.Array,
             learning_rate: float) -> TrainState:
        """A fresh state for training on `images` (N, H, W, C): parameters from `init_key`, data
        order and augmentation from `data_key`, the run's base learning rate in the optimizer state."""
        chex.assert_rank(images, 4)
        variables = _init_variables(self.model, init_key, tuple(images.shape[1:]))
        params = variables["params"]
        opt_state = with_learning_rate(self.tx.init(params), learning_rate)
        # `order` is drawn at the first step of every epoch (see `train_batch`).
        return TrainState(jnp.zeros([], jnp.int32), params, variables.get("batch_stats", {}), opt_state,
                          jax.random.key_data(data_key), jnp.zeros((images.shape[0],), jnp.int32))

    def apply(self, params, batch_stats, x: jax.Array, train: bool = False):
        """Logits (and, with train=True, the new batch statistics)."""
        variables = {"params": params, **({"batch_stats": batch_stats} if batch_stats else {})}
        if train and batch_stats:
            logits, updates = self.model.apply(variables, x, train=True, mutable=["batch_stats"])
            return logits, updates["batch_stats"]
        logits = self.model.apply(variables, x, train=train)
        return (logits, batch_stats) if train else logits

    def train_batch(self, state: TrainState, images: jax.Array, plan: PoisonPlan, patterns: Patterns,
                    step: jax.Array | None = None) -> tuple[TrainState, jax.Array, jax.Array]:
        """The (x, y) batch of `state.step`: gathered, poisoned, augmented (floats in [0, 1]).

        Epoch e visits the images in the order `permutation(fold_in(data_key, e))` (the last
        partial batch is dropped). The permutation is drawn once per epoch, at its first step, and
        kept in the state: drawing it every step cost 45 ms per step for MNIST's 60,000 images.
        `step`, when given, is `state.step` shared by every run of a vmapped sweep (unbatched, so
        the permutation's `cond` stays a branch under vmap instead of a select that sorts every step).

        With `data_axis` set (inside `shard_map`), each device gathers, stamps and augments only
        its slice of the batch; augmentation is drawn per example, so the slices together are the
        single-device batch.
        """
        n = images.shape[0]
        steps_per_epoch = n // self.batch_size
        step = state.step if step is None else step
        epoch, position = jnp.divmod(step, steps_per_epoch)
        key = jax.random.wrap_key_data(state.rng)
        order = jax.lax.cond(
            position == 0,
            lambda: jax.random.permutation(jax.random.fold_in(jax.random.fold_in(key, 0), epoch), n).astype(jnp.int32),
            lambda: state.order)
        idx = jax.lax.dynamic_slice(order, (position * self.batch_size,), (self.batch_size,))
        positions = self._positions()
        if self.data_axis is not None:
            idx = jax.lax.dynamic_slice_in_dim(idx, positions[0], positions.shape[0])
        x = stamp(to_float(images[idx]), plan.pattern_id[idx], plan.offsets[idx], patterns)
        if self.crop_padding or self.flip:
            aug_key = jax.random.fold_in(jax.random.fold_in(key, 1), step)
            x = augment(aug_key, x, crop_padding=self.crop_padding, flip=self.flip, indices=positions)
        return state._replace(order=order), x, plan.labels[idx]

    def train_step(self, state: TrainState, images: jax.Array, plan: PoisonPlan, patterns: Patterns,
                   step: jax.Array | None = None) -> tuple[TrainState, jax.Array]:
        """One SGD/Adam update; returns the new state and the batch loss.

        With `data_axis` set (inside `shard_map`), each device of that axis trains on its slice of
        the batch; batch norm normalises with the statistics of the whole batch (the model's
        `norm_axis`), and gradients, loss and running statistics are averaged over the axis, which
        matches the single-device step up to the order of floating-point sums. `step` as in
        `train_batch`.
        """
        state, x, y = self.train_batch(state, images, plan, patterns, step)
        if self.adversarial is not None:
            x = self.adversarial_batch(state, x, y, self._positions())

        def loss_fn(params):
            logits, new_stats = self.apply(params, state.batch_stats, x, train=True)
            return cross_entropy(logits, y, self.label_smoothing), new_stats

        (loss, new_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        if self.data_axis is not None:
            loss, grads, new_stats = jax.lax.pmean((loss, grads, new_stats), self.data_axis)
        updates, opt_state = self.tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        return TrainState(state.step + 1, params, new_stats, opt_state, state.rng, state.order), loss

    def _positions(self) -> jax.Array:
        """The positions in the whole batch of the examples this device trains on (all of them
        without data parallelism)."""
        if self.data_axis is None:
            return jnp.arange(self.batch_size)
        local = self.batch_size // jax.lax.axis_size(self.data_axis)
        return jax.lax.axis_index(self.data_axis) * local + jnp.arange(local)

    def adversarial_batch(self, state: TrainState, x: jax.Array, y: jax.Array,
                          positions: jax.Array | None = None) -> jax.Array:
        """PGD examples of the batch (x, y) against `state`'s parameters. The random start of
        each example is drawn from the run's key, the step and the example's position in the
        batch (`positions`), so it does not depend on how the batch is split over devices."""
        adv = self.adversarial
        key = jax.random.fold_in(jax.random.fold_in(jax.random.wrap_key_data(state.rng), 2), state.step)

        def logits(params, z):
            return self.apply(params, state.batch_stats, z, train=True)[0]

        x_adv = pgd(logits, state.params, x, y, key, eps=adv.eps, step_size=adv.size, steps=adv.steps,
                    norm=adv.norm, indices=positions)
        return jax.lax.stop_gradient(x_adv)

    @functools.partial(jax.jit, static_argnums=0, donate_argnums=1)
    def step(self, state: TrainState, images, plan, patterns) -> tuple[TrainState, jax.Array]:
        """One jitted training step (`train_step`); `state` is donated."""
        return self.train_step(state, images, plan, patterns)

    @functools.partial(jax.jit, static_argnums=(0, 6), donate_argnums=1)
    def _fused_steps(self, state: TrainState, images, plan, patterns, num_steps: jax.Array, max_steps: int):
        """`num_steps` (traced: one program for every chunk length up to `max_steps`) steps in one
        loop; returns the state and a (max_steps,) loss buffer whose first `num_steps` are set."""
        def body(i, carry):
            s, losses = carry
            s, loss = self.train_step(s, images, plan, patterns)
            return s, losses.at[i].set(loss)

        return jax.lax.fori_loop(0, num_steps, body, (state, jnp.zeros((max_steps,), jnp.float32)))

    @property
    def fused(self) -> bool:
        """Whether steps are fused into one `lax.scan` per chunk.

        The rule is deterministic: fused on GPU/TPU, a Python loop of jitted single steps on CPU,
        where XLA runs convolution gradients inside a loop body 4-8x slower than the same step
        dispatched alone (measured with jax 0.10.2 on 2 cores: 23 ms vs 5.5 ms per step for the
        small CNN on digits; benchmarks/step_dispatch.py). `fuse_steps` overrides it.
        """
        return self.fuse_steps if self.fuse_steps is not None else jax.default_backend() != "cpu"

    def train_steps(self, state: TrainState, images: jax.Array, plan: PoisonPlan, patterns: Patterns,
                    num_steps: int, max_steps: int | None = None) -> tuple[TrainState, jax.Array, jax.Array]:
        """`num_steps` steps; returns the state, the losses and whether loss and params stayed finite.

        Fused (GPU/TPU), the steps run as one loop compiled once for every `num_steps` up to
        `max_steps` (default `num_steps`); the losses are then a (max_steps,) buffer whose first
        `num_steps` entries are set. `state` is donated: do not use it afterwards.
        """
        chex.assert_rank(images, 4)
        if images.shape[0] < self.batch_size:
            raise ValueError(f"batch size {self.batch_size} exceeds the {images.shape[0]} training images")
        if self.fused:
            max_steps = num_steps if max_steps is None else max_steps
            check_fused_steps(num_steps, max_steps)
            state, losses = self._fused_steps(state, images, plan, patterns, jnp.int32(num_steps), max_steps)
        else:
            losses = []
            for _ in range(num_steps):
                state, loss = self.step(state, images, plan, patterns)
                losses.append(loss)
            losses = jnp.stack(losses)
        return state, losses, all_finite(losses, state.params)
