"""Sweeps: many runs that share a model, an optimizer and the data, trained as one program.

The runs of a sweep differ only in arrays: initial parameters, PRNG keys, learning rate (optimizer
state) and poison plan (which training image carries which pattern, its label, its offset). The
clean training set, the patterns and the test set are stored once. Two strategies advance them:

* ``vmap``: the runs' states are stacked on a leading axis and one compiled program steps every
  run (`jax.vmap` of the training step; `lax.scan` fuses the steps of a chunk on GPU/TPU). The
  run axis is sharded over the mesh's ``runs`` axis with `jax.shard_map`, so each device trains
  its own runs without collectives; the Python work per step does not grow with the run count.
* ``loop``: a Python loop over runs of each run's own jitted steps (the trainer's fusion rule),
  interleaved chunk by chunk. It is bit-for-bit the computation of training each run alone.

`choose_strategy` is the documented, deterministic rule (never a timing taken at run time, so
every process of a multi-host job makes the same choice): ``loop`` on a single CPU device, where
vmapped convolutions over different weights become grouped convolutions that XLA:CPU runs 1.2-3x
slower than separate steps (benchmarks/sweep_speedup.py), and ``vmap`` on GPU/TPU, where one small
model leaves most of the device idle, and whenever there are several devices (sharding needs the
stacked run axis).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import weakref
from typing import Any, Callable, NamedTuple, Sequence

import chex
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from anatomy_jax.poison.patterns import Patterns
from anatomy_jax.poison.poisoning import PoisonPlan
from anatomy_jax.train.loop import Observer, RunData, _chunk_ends, _record, empty_history
from anatomy_jax.train.sharding import DATA, RUNS, put, runs_axis_size, to_host
from anatomy_jax.train.steps import EvalData, Trainer, TrainState

STRATEGIES = ("auto", "vmap", "loop")

# Called at every evaluation step as observer(step, states, metrics): `states` is the stacked
# TrainState of every run of the chunk (host numpy arrays, leading run axis) and `metrics` the
# stacked metrics. `per_run` adapts the single-run observers of `train_loop`.
SweepObserver = Callable[[int, TrainState, dict], None]


def choose_strategy(requested: str, backend: str, num_devices: int) -> str:
    """The strategy a sweep uses: `requested` unless it is "auto", then the rule above."""
    if requested not in STRATEGIES:
        raise ValueError(f"unknown sweep strategy {requested!r}; choose one of {', '.join(STRATEGIES)}")
    if requested == "loop" and num_devices > 1:
        raise ValueError(f"the loop strategy runs on one device, but the mesh has {num_devices}; "
                         "use the vmap strategy or a single device")
    if requested != "auto":
        return requested
    return "vmap" if (backend != "cpu" or num_devices > 1) else "loop"


class SweepData(NamedTuple):
    """The device data of a sweep: shared arrays once, per-run arrays with a leading run axis."""

    images: jax.Array  # (N, H, W, C) uint8, shared
    plans: PoisonPlan  # (R, N) per run
    patterns: Patterns  # shared
    eval_data: EvalData  # shared test images; offsets (R, K, B, E, 2) per run
    targets: jax.Array  # (K,) shared

    @property
    def num_runs(self) -> int:
        return int(self.plans.labels.shape[0])

    def runs(self) -> list[RunData]:
        """The data of each run, as `train_loop` takes it."""
        per_run = unstack_tree((self.plans, self.eval_data.offsets))
        return [RunData(self.images, plan, self.patterns, self.eval_data._replace(offsets=offsets), self.targets)
                for plan, offsets in per_run]


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
    """One SweepData from the RunData of runs that share images, patterns, test set and targets."""
    if not runs:
        raise ValueError("a sweep needs at least one run")
    first = runs[0]
    for r in runs[1:]:
        chex.assert_equal_shape([first.images, r.images])
        if not np.array_equal(np.asarray(first.targets), np.asarray(r.targets)):
            raise ValueError("runs of one sweep must share their pattern targets")
    plans, offsets = stack_trees([(r.plan, r.eval_data.offsets) for r in runs])
    return SweepData(first.images, plans, first.patterns, first.eval_data._replace(offsets=offsets), first.targets)


def pad_runs(items: Sequence[Any], multiple: int) -> list[Any]:
    """`items` padded to a multiple of `multiple` by repeating the last one (padding runs train
    like the run they copy and are dropped from the results)."""
    items = list(items)
    return items + [items[-1]] * (-len(items) % multiple)


# ---- the vmap strategy: one program for every run, sharded over the runs axis -----------------


@functools.partial(jax.jit, static_argnums=(0, 1, 2), donate_argnums=3)
def _vmapped_steps(trainer: Trainer, mesh: Mesh, num_steps: int, states: TrainState, images, plans, patterns):
    def local(states, images, plans, patterns):
        step = jax.vmap(trainer.train_step, in_axes=(0, None, 0, None))
        if num_steps == 1:  # no loop: XLA:CPU runs convolution gradients inside loops slowly
            states, losses = step(states, images, plans, patterns)
            return states, losses[:, None]
        states, losses = jax.lax.scan(lambda s, _: step(s, images, plans, patterns), states, None, length=num_steps)
        return states, losses.T

    return jax.shard_map(local, mesh=mesh, in_specs=(P(RUNS), P(), P(RUNS), P()),
                         out_specs=(P(RUNS), P(RUNS)), check_vma=False)(states, images, plans, patterns)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _vmapped_eval(trainer: Trainer, mesh: Mesh, params, batch_stats, offsets, shared_eval, patterns, targets):
    images, labels, valid = shared_eval

    def local(params, batch_stats, offsets, images, labels, valid, patterns, targets):
        def one(p, b, off):
            return trainer.evaluate(p, b, EvalData(images, labels, valid, off), patterns, targets)

        return jax.vmap(one)(params, batch_stats, offsets)

    return jax.shard_map(local, mesh=mesh, in_specs=(P(RUNS), P(RUNS), P(RUNS), P(), P(), P(), P(), P()),
                         out_specs=P(RUNS), check_vma=False)(params, batch_stats, offsets, images, labels, valid,
                                                            patterns, targets)


@jax.jit
def _runs_finite(losses: jax.Array, params: Any) -> jax.Array:
    """(R,) whether each run's losses (R, T) and parameters are all finite."""
    ok = jnp.isfinite(losses).all(axis=1)
    for p in jax.tree.leaves(params):
        ok &= jnp.isfinite(p.reshape(p.shape[0], -1)).all(axis=1)
    return ok


_DATA_PARALLEL: "weakref.WeakKeyDictionary[Trainer, Trainer]" = weakref.WeakKeyDictionary()


def _data_parallel(trainer: Trainer) -> Trainer:
    """`trainer` splitting batches over the mesh's data axis; one object per trainer, so the
    compiled programs (cached per Trainer object) are reused by every chunk of a sweep."""
    if trainer not in _DATA_PARALLEL:
        _DATA_PARALLEL[trainer] = dataclasses.replace(trainer, data_axis=DATA)
    return _DATA_PARALLEL[trainer]


class _VmapEngine:
    def __init__(self, trainer: Trainer, states: TrainState, data: SweepData, mesh: Mesh):
        if data.num_runs % runs_axis_size(mesh):
            raise ValueError(f"{data.num_runs} runs do not split over {runs_axis_size(mesh)} devices; pad them "
                             "with `pad_runs`")
        data_shards = mesh.shape[DATA]
        if trainer.batch_size % data_shards:
            raise ValueError(f"batch size {trainer.batch_size} does not split over {data_shards} data-parallel devices")
        self.trainer = _data_parallel(trainer) if data_shards > 1 else trainer
        self.mesh = mesh
        self.states = place_states(states, "vmap", mesh)
        self.plans, self.offsets = put((data.plans, data.eval_data.offsets), mesh, P(RUNS))
        self.images, self.patterns, self.targets, self.shared_eval = put(
            (data.images, data.patterns, data.targets,
             (data.eval_data.images, data.eval_data.labels, data.eval_data.valid)), mesh, P())
        # 8 host-CPU devices have deadlocked in a collective when programs were dispatched back to
        # back; waiting for each dispatch avoids it, at no cost on a CPU.
        self.block = jax.default_backend() == "cpu" and mesh.size > 1

    def advance(self, num_steps: int, active: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        del active  # every run of the stack steps; diverged ones are ignored by the caller
        calls = [num_steps] if self.trainer.fused else [1] * num_steps
        losses = []
        for n in calls:
            self.states, loss = _vmapped_steps(self.trainer, self.mesh, n, self.states, self.images, self.plans,
                                               self.patterns)
            if self.block:
                jax.block_until_ready(self.states)
            losses.append(loss)
        losses = jnp.concatenate(losses, axis=1) if len(losses) > 1 else losses[0]
        return to_host((losses, _runs_finite(losses, self.states.params)))

    def evaluate(self) -> dict[str, np.ndarray]:
        return to_host(_vmapped_eval(self.trainer, self.mesh, self.states.params, self.states.batch_stats,
                                     self.offsets, self.shared_eval, self.patterns, self.targets))

    def stacked_state(self) -> TrainState:
        return self.states


# ---- the loop strategy: each run's own jitted steps, interleaved --------------------------------


class _LoopEngine:
    def __init__(self, trainer: Trainer, states: TrainState, data: SweepData):
        self.trainer = trainer
        self.states = unstack_tree(states)
        self.runs = data.runs()

    def advance(self, num_steps: int, active: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        outputs = {}
        for r in np.flatnonzero(active):
            run = self.runs[r]
            self.states[r], losses, finite = self.trainer.train_steps(
                self.states[r], run.images, run.plan, run.patterns, num_steps)
            outputs[r] = (losses, finite)
        outputs = jax.device_get(outputs)  # one wait for every run; stacking on the host compiles nothing
        losses = np.full((len(self.states), num_steps), np.nan, np.float32)
        finite = np.zeros(len(self.states), bool)
        for r, (run_losses, run_finite) in outputs.items():
            losses[r], finite[r] = run_losses, run_finite
        return losses, finite

    def evaluate(self) -> dict[str, np.ndarray]:
        metrics = jax.device_get([self.trainer.evaluate(s.params, s.batch_stats, run.eval_data, run.patterns,
                                                        run.targets) for s, run in zip(self.states, self.runs)])
        return {k: np.stack([m[k] for m in metrics]) for k in metrics[0]}

    def stacked_state(self) -> TrainState:
        return stack_trees(self.states)


def place_states(states: TrainState, strategy: str, mesh: Mesh | None) -> TrainState:
    """Stacked states where a strategy keeps them: sharded over the runs axis (vmap) or as they are."""
    return put(states, mesh, P(RUNS)) if strategy == "vmap" else states


def per_run(observers: Sequence[Callable[[int, TrainState, dict], None]]) -> SweepObserver:
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
    histories: list[dict] | None = None,
    observers: Sequence[SweepObserver] = (),
    checkpoint_every: int = 0,
    on_checkpoint: Callable[[TrainState, list[dict]], None] | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> tuple[TrainState, list[dict]]:
    """Trains every run of `data` from `states.step` to `steps`; returns the stacked final states
    and one metric history per run (the same dicts `train_loop` writes).

    `states` are stacked TrainStates (`stack_trees`), all at the same step. A run whose loss or
    parameters stop being finite is marked diverged (its later evaluations are None) and leaves
    every other run unchanged. `on_checkpoint(states, histories)` is called every
    `checkpoint_every` steps before the end.
    """
    if strategy not in ("vmap", "loop"):
        raise ValueError(f"strategy must be 'vmap' or 'loop' here, got {strategy!r} (see choose_strategy)")
    if eval_every <= 0:
        raise ValueError(f"eval_every must be > 0, got {eval_every}")
    if strategy == "vmap" and mesh is None:
        raise ValueError("the vmap strategy needs a mesh (anatomy_jax.train.make_sweep_mesh)")
    if data.images.shape[0] < trainer.batch_size:
        raise ValueError(f"batch size {trainer.batch_size} exceeds the {data.images.shape[0]} training images")
    num_runs = data.num_runs
    chex.assert_axis_dimension(states.step, 0, num_runs)
    engine = _VmapEngine(trainer, states, data, mesh) if strategy == "vmap" else _LoopEngine(trainer, states, data)
    histories = [empty_history() for _ in range(num_runs)] if histories is None else histories
    num_patterns = int(data.targets.shape[0])
    start = int(to_host(states.step)[0])
    eval_steps = [s for s in _chunk_ends(0, steps, [eval_every]) if s > start]
    pending: list[np.ndarray] = []
    done = start
    for end in _chunk_ends(start, steps, [eval_every, checkpoint_every]):
        active = np.array([not h["diverged"] for h in histories])
        if not active.any():
            break
        losses, finite = engine.advance(end - done, active)
        pending.append(losses)
        if on_progress is not None:
            on_progress(end - done)
        done = end
        for r in np.flatnonzero(active & ~finite):
            histories[r]["diverged"], histories[r]["diverged_at_step"] = True, end
            for s in (s for s in eval_steps if s >= end):
                _record(histories[r], s, None, None, num_patterns)
        if end in eval_steps:
            metrics = engine.evaluate()
            train_loss = np.concatenate(pending, axis=1).mean(axis=1)
            pending = []
            for r in np.flatnonzero(active & finite):
                _record(histories[r], end, float(train_loss[r]), jax.tree.map(lambda x, r=r: x[r], metrics),
                        num_patterns)
            if observers:
                host_states = to_host(engine.stacked_state())
                for observe in observers:
                    observe(end, host_states, metrics)
        if checkpoint_every and end % checkpoint_every == 0 and end < steps and on_checkpoint is not None:
            on_checkpoint(engine.stacked_state(), histories)
    return engine.stacked_state(), histories


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
    """Trains one run from `state.step` to `steps`; returns the final state and its metric history.

    A one-run sweep with the loop strategy (the run's own jitted steps). `on_checkpoint(state,
    history)` is called every `checkpoint_every` steps (and not at the end: the caller decides what
    a finished run saves). `on_progress(n)` reports n more steps done.
    """
    checkpoint = None if on_checkpoint is None else (
        lambda states, histories: on_checkpoint(unstack_tree(states)[0], histories[0]))
    states, histories = train_sweep(
        trainer, stack_trees([state]), stack_runs([data]), steps=steps, eval_every=eval_every, strategy="loop",
        histories=None if history is None else [history], observers=[per_run(observers)] if observers else (),
        checkpoint_every=checkpoint_every, on_checkpoint=checkpoint, on_progress=on_progress)
    return unstack_tree(states)[0], histories[0]


def _memory_budget_bytes() -> int:
    """Half the first local device's memory (accelerators), or a quarter of host RAM (CPU)."""
    stats = jax.local_devices()[0].memory_stats() or {}
    if "bytes_limit" in stats:
        return int(stats["bytes_limit"]) // 2
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 4


def auto_runs_per_device(trainer: Trainer, state: TrainState, image_shape: tuple[int, int, int], num_runs: int,
                         num_devices: int, strategy: str, reserved_bytes: int = 0) -> int:
    """How many runs one device holds at once: all of them (`ceil(num_runs / num_devices)`) unless
    a memory estimate says otherwise. Per run: the train state, and for vmap also the batch's
    activations (stage outputs x 4 for saved values, gradients and workspace, or x 2 for an
    evaluation batch, whichever is larger). The budget is
    half the device memory (a quarter of RAM on CPU) less `reserved_bytes` (the datasets)."""
    per_run = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(state))
    if strategy == "vmap":
        _, reps = jax.eval_shape(lambda p, s, x: trainer.model.apply(
            {"params": p, **({"batch_stats": s} if s else {})}, x, capture=True), state.params, state.batch_stats,
            jax.ShapeDtypeStruct((1, *image_shape), jnp.float32))
        per_example = sum(r.size * r.dtype.itemsize for r in jax.tree.leaves(reps))
        per_run += per_example * max(4 * trainer.batch_size, 2 * trainer.eval_batch_size)
    fits = max(1, (_memory_budget_bytes() - reserved_bytes) // max(per_run, 1))
    return int(min(fits, -(-num_runs // num_devices)))
