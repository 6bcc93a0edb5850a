"""How the runs of a sweep advance together: the ``vmap`` and ``loop`` strategies, the rule that
picks one, and the memory estimate that sizes chunks of runs.

The runs of a sweep differ only in arrays: initial parameters, PRNG keys, learning rate (optimizer
state), poison plan and metric inputs. The clean training set, the patterns and the test set are
stored once.

* ``vmap``: the runs' states are stacked on a leading axis and one compiled program steps every
  run (`jax.vmap` of the training step; `lax.scan` fuses the steps of a chunk on GPU/TPU). The
  run axis is sharded over the mesh's ``runs`` axis with `jax.shard_map`, so each device trains
  its own runs without collectives; the Python work per step does not grow with the run count.
* ``loop``: each run's own jitted steps, interleaved step by step. It is bit-for-bit the
  computation of training each run alone.

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
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from anatomy_jax.train.evaluation import Metric, TestSet, evaluate
from anatomy_jax.train.runs import SweepData, stack_trees, unstack_tree
from anatomy_jax.train.sharding import DATA, RUNS, put, runs_axis_size, to_host
from anatomy_jax.train.steps import Trainer, TrainState, all_finite, check_fused_steps

STRATEGIES = ("auto", "vmap", "loop")

# Polled between steps: True once the run should stop (a signal arrived); see train_sweep.
StopCheck = Callable[[], bool]


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


def place_states(states: TrainState, strategy: str, mesh: Mesh | None) -> TrainState:
    """Stacked states where a strategy keeps them: sharded over the runs axis (vmap) or as they are."""
    return put(states, mesh, P(RUNS)) if strategy == "vmap" else states


def _never() -> bool:
    return False


# ---- the vmap strategy: one program for every run, sharded over the runs axis -----------------


def step_all(trainer: Trainer, states: TrainState, images, plans, patterns) -> tuple[TrainState, jax.Array]:
    """One training step of every stacked run (traceable; the vmap strategy's step).

    Every run of a sweep is at the same step, so the step is passed unbatched: the epoch
    permutation's `cond` stays a branch, where a batched predicate would make vmap turn it into a
    select that sorts N indices at every step of every run.
    """
    # the runs' common step (a run resumed after diverging under the loop strategy may lag: it is
    # ignored anyway, and the others must not follow it)
    return jax.vmap(trainer.train_step, in_axes=(0, None, 0, None, None))(states, images, plans, patterns,
                                                                         jnp.max(states.step))


@functools.partial(jax.jit, static_argnums=(0, 1, 2), donate_argnums=3)
def _vmapped_steps(trainer: Trainer, mesh: Mesh, max_steps: int, states: TrainState, images, plans, patterns,
                   num_steps: jax.Array):
    """`num_steps` steps of every run; losses (R, max_steps), the first `num_steps` columns set.
    `num_steps` is traced, so one program serves every chunk length up to `max_steps`."""
    def local(states, images, plans, patterns, num_steps):
        def step(s):
            return step_all(trainer, s, images, plans, patterns)

        if max_steps == 1:  # no loop: XLA:CPU runs convolution gradients inside loops slowly
            states, losses = step(states)
            return states, losses[:, None]

        def body(i, carry):
            s, losses = carry
            s, loss = step(s)
            return s, losses.at[:, i].set(loss)

        zeros = jnp.zeros((states.step.shape[0], max_steps), jnp.float32)
        return jax.lax.fori_loop(0, num_steps, body, (states, zeros))

    return jax.shard_map(local, mesh=mesh, in_specs=(P(RUNS), P(), P(RUNS), P(), P()),
                         out_specs=(P(RUNS), P(RUNS)), check_vma=False)(states, images, plans, patterns, num_steps)


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _vmapped_eval(trainer: Trainer, metrics: tuple, mesh: Mesh, params, batch_stats, inputs, test: TestSet):
    def local(params, batch_stats, inputs, test):
        def one(p, b, inp):
            return evaluate(functools.partial(trainer.apply, p, b), test, metrics, inp)

        return jax.vmap(one)(params, batch_stats, inputs)

    return jax.shard_map(local, mesh=mesh, in_specs=(P(RUNS), P(RUNS), P(RUNS), P()), out_specs=P(RUNS),
                         check_vma=False)(params, batch_stats, inputs, test)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _evaluate_run(trainer: Trainer, metrics: tuple, params, batch_stats, inputs, test: TestSet):
    return evaluate(functools.partial(trainer.apply, params, batch_stats), test, metrics, inputs)


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
        # batch norm averages its statistics over the data axis: the whole batch's, as on one device
        _DATA_PARALLEL[trainer] = dataclasses.replace(trainer, data_axis=DATA, model=trainer.model.clone(norm_axis=DATA))
    return _DATA_PARALLEL[trainer]


class VmapEngine:
    """Advances stacked runs with one vmapped (and sharded) program."""

    def __init__(self, trainer: Trainer, metrics: tuple, states: TrainState, data: SweepData, mesh: Mesh,
                 max_steps: int):
        if data.num_runs % runs_axis_size(mesh):
            raise ValueError(f"{data.num_runs} runs do not split over {runs_axis_size(mesh)} devices; pad them "
                             "with `pad_runs`")
        data_shards = mesh.shape[DATA]
        if trainer.batch_size % data_shards:
            raise ValueError(f"batch size {trainer.batch_size} does not split over {data_shards} data-parallel devices")
        self.trainer = _data_parallel(trainer) if data_shards > 1 else trainer
        self.metrics = metrics
        self.mesh = mesh
        self.max_steps = max_steps
        self.states = place_states(states, "vmap", mesh)
        self.plans, self.inputs = put((data.plans, data.metric_inputs), mesh, P(RUNS))
        self.images, self.patterns, self.test = put((data.images, data.patterns, data.test), mesh, P())
        # 8 host-CPU devices have deadlocked in a collective when programs were dispatched back to
        # back; waiting for each dispatch avoids it, at no cost on a CPU.
        self.block = jax.default_backend() == "cpu" and mesh.size > 1

    def advance(self, num_steps: int, active: np.ndarray, should_stop: StopCheck) -> tuple[np.ndarray, np.ndarray]:
        """Up to `num_steps` steps of every run (fewer when `should_stop()` turns true between
        unfused steps); returns losses (R, steps done) and whether each run stayed finite."""
        del active  # every run of the stack steps; diverged ones are ignored by the caller
        fused = self.trainer.fused
        if fused:
            check_fused_steps(num_steps, self.max_steps)
        calls = [num_steps] if fused else [1] * num_steps
        losses = []
        for n in calls:
            self.states, loss = _vmapped_steps(self.trainer, self.mesh, self.max_steps if fused else 1, self.states,
                                               self.images, self.plans, self.patterns, jnp.int32(n))
            if self.block:
                jax.block_until_ready(self.states)
            losses.append(loss)
            if should_stop():
                break
        if fused:
            losses, finite = to_host((losses[0], _runs_finite(losses[0], self.states.params)))
            return losses[:, :num_steps], finite
        losses = jnp.concatenate(losses, axis=1) if len(losses) > 1 else losses[0]
        return to_host((losses, _runs_finite(losses, self.states.params)))

    def evaluate(self) -> dict[str, np.ndarray]:
        return to_host(_vmapped_eval(self.trainer, self.metrics, self.mesh, self.states.params,
                                     self.states.batch_stats, self.inputs, self.test))

    def stacked_state(self) -> TrainState:
        return self.states


# ---- the loop strategy: each run's own jitted steps, interleaved --------------------------------


class LoopEngine:
    """Advances each run with its own jitted steps (bitwise the computation of a run alone)."""

    def __init__(self, trainer: Trainer, metrics: tuple, states: TrainState, data: SweepData, max_steps: int):
        self.trainer = trainer
        self.max_steps = max_steps
        self.metrics = metrics
        self.states = unstack_tree(states)
        self.runs = data.runs()

    def advance(self, num_steps: int, active: np.ndarray, should_stop: StopCheck) -> tuple[np.ndarray, np.ndarray]:
        """As `VmapEngine.advance`; runs not `active` (diverged) stay where they are."""
        runs = np.flatnonzero(active)
        if self.trainer.fused:
            outputs = {}
            for r in runs:
                run = self.runs[r]
                self.states[r], losses, finite = self.trainer.train_steps(
                    self.states[r], run.images, run.plan, run.patterns, num_steps, self.max_steps)
                outputs[r] = (losses, finite)
        else:
            per_run: dict[int, list] = {r: [] for r in runs}
            for _ in range(num_steps):
                for r in runs:
                    run = self.runs[r]
                    self.states[r], loss = self.trainer.step(self.states[r], run.images, run.plan, run.patterns)
                    per_run[r].append(loss)
                if should_stop():
                    break
            stacked = {r: jnp.stack(losses) for r, losses in per_run.items()}
            outputs = {r: (losses, all_finite(losses, self.states[r].params)) for r, losses in stacked.items()}
        outputs = jax.device_get(outputs)  # one wait for every run; stacking on the host compiles nothing
        outputs = {r: (losses[:num_steps] if self.trainer.fused else losses, finite)
                   for r, (losses, finite) in outputs.items()}
        done = len(next(iter(outputs.values()))[0]) if outputs else num_steps
        losses = np.full((len(self.states), done), np.nan, np.float32)
        finite = np.zeros(len(self.states), bool)
        for r, (run_losses, run_finite) in outputs.items():
            losses[r], finite[r] = run_losses, run_finite
        return losses, finite

    def evaluate(self) -> dict[str, np.ndarray]:
        metrics = jax.device_get([_evaluate_run(self.trainer, self.metrics, s.params, s.batch_stats,
                                                run.metric_inputs, run.test)
                                  for s, run in zip(self.states, self.runs)])
        return {k: np.stack([m[k] for m in metrics]) for k in metrics[0]}

    def stacked_state(self) -> TrainState:
        return stack_trees(self.states)


def make_engine(strategy: str, trainer: Trainer, metrics: Sequence[Metric], states: TrainState, data: SweepData,
                mesh: Mesh | None, max_steps: int):
    """The engine of `strategy`; fused steps compile once for chunks of up to `max_steps` steps."""
    if strategy not in ("vmap", "loop"):
        raise ValueError(f"strategy must be 'vmap' or 'loop' here, got {strategy!r} (see choose_strategy)")
    if strategy == "vmap":
        if mesh is None:
            raise ValueError("the vmap strategy needs a mesh (anatomy_jax.train.make_sweep_mesh)")
        return VmapEngine(trainer, tuple(metrics), states, data, mesh, max_steps)
    return LoopEngine(trainer, tuple(metrics), states, data, max_steps)


def _memory_budget_bytes() -> int:
    """Half the first local device's memory (accelerators), or a quarter of host RAM (CPU)."""
    stats = jax.local_devices()[0].memory_stats() or {}
    if "bytes_limit" in stats:
        return int(stats["bytes_limit"]) // 2
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 4


def auto_runs_per_device(trainer: Trainer, state: TrainState, image_shape: tuple[int, int, int], num_runs: int,
                         num_devices: int, strategy: str, reserved_bytes: int = 0, run_data_bytes: int = 0) -> int:
    """How many runs one device holds at once: all of them (`ceil(num_runs / num_devices)`) unless
    a memory estimate says otherwise. Per run: the train state (with its epoch order), its data
    (`run_data_bytes`: poison plan and metric inputs), and for vmap also the batch's
    activations (stage outputs x 4 for saved values, gradients and workspace, or x 2 for an
    evaluation batch, whichever is larger). The budget is
    half the device memory (a quarter of RAM on CPU) less `reserved_bytes` (the datasets)."""
    per_run = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(state)) + run_data_bytes
    if strategy == "vmap":
        _, reps = jax.eval_shape(lambda p, s, x: trainer.model.apply(
            {"params": p, **({"batch_stats": s} if s else {})}, x, capture=True), state.params, state.batch_stats,
            jax.ShapeDtypeStruct((1, *image_shape), jnp.float32))
        per_example = sum(r.size * r.dtype.itemsize for r in jax.tree.leaves(reps))
        per_run += per_example * max(4 * trainer.batch_size, 2 * trainer.eval_batch_size)
    fits = max(1, (_memory_budget_bytes() - reserved_bytes) // max(per_run, 1))
    return int(min(fits, -(-num_runs // num_devices)))
