"""The study runner every experiment shares: run specs in, trained chunks and streamed results out.

A study is a list of `RunSpec`s (its grid). `Study.prepare` does everything that can fail for bad
settings before anything is written: each run's poison plan, the trainers, the device mesh, the
strategy and how many runs train together. `Study.run` then trains the runs in chunks (consecutive
runs with the same training config, at most `runs_per_chunk` of them), each chunk as one sweep
(`anatomy_jax.train.train_sweep`), and

* checkpoints with orbax into one directory, named by a global step (index of the chunk's first
  run x steps + step, so the integer step directories sort in training order); the metadata holds
  the chunk, the step within the run, the padded run count, the histories, the training losses
  since the last evaluation and every finished run's entry, so a resume continues exactly;
* resumes from the newest complete checkpoint, refusing different settings, keeping the strategy
  and chunking it started with, on any device count;
* streams results: `on_update(entries)` is called at every evaluation and checkpoint with one entry
  per run, each with a `status` ("pending", "running", "finished" or "diverged");
* stops cleanly on SIGINT/SIGTERM: it checkpoints the step it reached, streams the results and
  raises `Interrupted` (the CLI prints the resume command and exits with 130/143).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import pathlib
import signal
import sys
import threading
import time
from typing import Any, Callable, Iterator, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh
from tqdm.auto import tqdm

from anatomy_jax.data import Dataset
from anatomy_jax.train import (DATA, Metric, PreparedRun, RunPlan, RunSpec, SweepObserver, Trainer, TrainState,
                               auto_runs_per_device, batch_test_set, checkpoint_manager, choose_strategy,
                               empty_history, latest_meta, make_sweep_mesh, make_trainer, meta_at, pad_runs, per_run,
                               place_states, plan_run, prepare_run, prune, restore_step, run_metrics, runs_axis_size,
                               save, stack_runs, stack_trees, to_host, train_sweep)
from anatomy_jax.utils.errors import SettingsError
from anatomy_jax.utils.serialize import write_json


class Interrupted(Exception):
    """Training stopped on a signal after saving a checkpoint (exit code 128 + signal number)."""

    def __init__(self, signum: int, step: int):
        self.signum, self.step = signum, step
        super().__init__(f"interrupted by {signal.Signals(signum).name} at step {step}")


class StopFlag:
    """Set by SIGINT/SIGTERM while `catch_signals` is active; a second signal stops at once.

    In a multi-process job every process polls at the same points of the loop, and the flag is
    combined over processes there, so all of them stop at the same step (a preempted host's
    SIGTERM stops the job, and every process writes its part of the checkpoint)."""

    def __init__(self) -> None:
        self.signum: int | None = None

    def __call__(self) -> bool:
        if jax.process_count() > 1:
            local = np.asarray([self.signum or 0], np.int32)
            signums = np.asarray(multihost_utils.process_allgather(local)).reshape(-1)
            if self.signum is None and signums.any():
                self.signum = int(signums[signums > 0][0])
        return self.signum is not None


@contextlib.contextmanager
def catch_signals(flag: StopFlag) -> Iterator[StopFlag]:
    """Turns SIGINT and SIGTERM into `flag` being set (in the main thread; elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum, frame):
        if flag.signum is not None:  # asked twice: stop now
            signal.signal(signum, signal.SIG_DFL)
            raise KeyboardInterrupt
        flag.signum = signum

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield flag
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


@dataclasses.dataclass(frozen=True)
class SweepLayout:
    """How the runs train: the strategy, the device mesh and how many runs train together."""

    strategy: str
    mesh: Mesh
    runs_per_chunk: int

    def describe(self, chunks: int) -> dict[str, Any]:
        """The layout as results.json records it."""
        device = self.mesh.devices.flat[0]
        return {"strategy": self.strategy, "num_devices": int(self.mesh.size), "runs_axis": runs_axis_size(self.mesh),
                "data_parallel": int(self.mesh.shape[DATA]), "runs_per_chunk": self.runs_per_chunk,
                "num_chunks": chunks, "process_count": jax.process_count(),
                "platform": device.platform, "device_kind": device.device_kind}


def describe_layout(sweep: dict[str, Any], num_runs: int) -> str:
    """One line: strategy, runs per chunk and devices."""
    return (f"sweep: {num_runs} runs, strategy {sweep['strategy']}, {sweep['runs_per_chunk']} runs together "
            f"({sweep['num_chunks']} chunk{'s' if sweep['num_chunks'] > 1 else ''}) on {sweep['num_devices']} "
            f"{sweep['platform']} device{'s' if sweep['num_devices'] > 1 else ''} ({sweep['device_kind']}"
            f"{', data parallel x%d' % sweep['data_parallel'] if sweep['data_parallel'] > 1 else ''}"
            f"{', %d processes' % sweep['process_count'] if sweep['process_count'] > 1 else ''})")


@dataclasses.dataclass(frozen=True)
class SweepOptions:
    """How runs share devices (the fields of every study config that trains)."""

    strategy: str = "auto"
    runs_per_device: int = 0
    devices: int = 0
    data_parallel: int = 1


class RunTracker:
    """What `Study.run(tracking=...)` makes per run: an observer with a JSON state to checkpoint."""

    def __call__(self, step: int, state: TrainState, metrics: dict) -> None: ...

    def records(self) -> Any: ...


class ChunkTracker:
    """Or one tracker for a whole chunk (duck-typed) (e.g. a probe vmapped over the runs, one program): a sweep
    observer that sees the stacked states (padding rows included) and keeps one JSON state per
    real run."""

    def __call__(self, step: int, states: TrainState, metrics: dict) -> None: ...

    def records(self) -> list[Any]: ...


class PerRunTrackers(ChunkTracker):
    """A chunk tracker made of one `RunTracker` per real run (padding rows are not tracked)."""

    def __init__(self, trackers: Sequence[RunTracker]):
        self.trackers = list(trackers)
        self._observe = per_run(self.trackers)

    def __call__(self, step: int, states: TrainState, metrics: dict) -> None:
        self._observe(step, states, metrics)

    def records(self) -> list[Any]:
        return [t.records() for t in self.trackers]


# tracking(trainer, specs of the chunk, their prepared runs, each run's parameters where training
#   starts (host arrays), restored tracker records or None) -> a ChunkTracker, or one RunTracker
#   per run (e.g. an RWC tracker per run, a vmapped gradient probe for the chunk)
Tracking = Callable[[Trainer, Sequence[RunSpec], Sequence[PreparedRun], Sequence[Any], "Sequence[Any] | None"],
                    "ChunkTracker | Sequence[RunTracker]"]
# summarise(spec, history, realised poison stats, tracker records or None) -> results entry
Summarise = Callable[[RunSpec, dict, list, Any], dict]


class ResultsStream(NamedTuple):
    """`on_start` and `on_update` for `Study.run` that keep `results` (a study's results dict) and
    its results.json current: the layout, where a resume started, and every run entry."""

    on_start: Callable[[dict, "dict | None"], None]
    on_update: Callable[[list[dict]], None]


def stream_results(results: dict, path: pathlib.Path, *, resume: bool = False, write: bool = True,
                   announce: bool = True) -> ResultsStream:
    """Callbacks that record the layout (`results["sweep"]`), `resumed_from_step` (the step within
    the run) and `resumed_from_chunk`, and rewrite `path` with every update of the run entries
    (`write=False` on the processes of a multi-host job that do not write)."""
    results.setdefault("resumed_from_step", None)

    def on_start(sweep: dict, resumed_from: dict | None) -> None:
        results["sweep"] = sweep
        if resumed_from is not None:
            results["resumed_from_step"], results["resumed_from_chunk"] = resumed_from["step"], resumed_from["chunk"]
        elif resume:
            print(f"note: nothing to resume in {path.parent}; starting from scratch", file=sys.stderr)
        if announce:
            print(describe_layout(sweep, len(results.get("runs", []))), file=sys.stderr)

    def on_update(entries: list[dict]) -> None:
        results["runs"] = entries
        if write:
            write_json(path, results)

    return ResultsStream(on_start, on_update)


class StudyResult(NamedTuple):
    entries: list[dict]  # one per run, in grid order (as results.json lists them)
    histories: list[dict]
    states: list[TrainState] | None  # final state of each run (host arrays) when asked for
    resumed_from: dict | None  # {"chunk": i, "step": s} of the checkpoint the run continued from


def sweep_config(config: Any) -> Any:
    """The part of a training config that runs of one sweep share: all of it but the schedule,
    which is per-run optimizer state (`anatomy_jax.train.optim.with_schedule`)."""
    return dataclasses.replace(config, schedule="constant")


def _chunks(specs: Sequence[RunSpec], runs_per_chunk: int) -> list[tuple[int, int]]:
    """(start, stop) of each chunk: consecutive runs with the same training config (but for the
    schedule) and the same patterns (a sweep shares both), at most `runs_per_chunk` of them."""
    def shared(spec: RunSpec) -> tuple:
        return sweep_config(spec.config), tuple((p.pattern, p.target) for p in spec.poisons)

    chunks, start = [], 0
    for i in range(1, len(specs) + 1):
        if i == len(specs) or i - start == runs_per_chunk or shared(specs[i]) != shared(specs[start]):
            chunks.append((start, i))
            start = i
    return chunks


def _runs_of(host: Any, count: int) -> list[Any]:
    """The first `count` runs of a stacked host pytree, one pytree each."""
    return [jax.tree.map(lambda x, i=i: x[i], host) for i in range(count)]


def _changed(saved: dict, now: dict) -> list[str]:
    return sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k))


class Study:
    """A prepared study: validated runs, their plans, trainers and the layout. See the module doc."""

    def __init__(self, specs: Sequence[RunSpec], data: Dataset, plans: list[RunPlan], trainers: dict,
                 options: SweepOptions, mesh: Mesh, metrics: tuple | None):
        self.specs, self.data, self.plans, self.trainers = list(specs), data, plans, trainers
        self.metrics = metrics
        self.options, self.mesh = options, mesh
        self.steps = specs[0].config.steps
        self.train_images = jnp.asarray(data.train.images)
        eval_batch = next(iter(trainers.values())).eval_batch_size
        self.test = batch_test_set(data.test.images, data.test.labels, eval_batch)

    @classmethod
    def prepare(cls, specs: Sequence[RunSpec], data: Dataset, options: SweepOptions = SweepOptions(),
                metrics: Sequence[Metric] | None = None) -> "Study":
        """Validates every run and the layout; raises SettingsError naming the first problem.

        `metrics` are the test metrics every run records (default: clean accuracy and loss, plus
        ASR and reliance for poisoned runs; see `anatomy_jax.train.run_metrics`)."""
        try:
            if not specs:
                raise ValueError("the study has no runs")
            if len({s.config.steps for s in specs}) != 1:
                raise ValueError("every run of a study trains for the same number of steps")
            for s in specs:
                s.config.validate()
                if s.config.batch_size > len(data.train):
                    raise ValueError(f"batch size {s.config.batch_size} exceeds the {len(data.train)} training "
                                     "images")
                if not (s.learning_rate > 0 and np.isfinite(s.learning_rate)):
                    raise ValueError(f"learning rates must be positive, got {s.learning_rate}")
            mesh = make_sweep_mesh(options.devices, options.data_parallel)
            choose_strategy(options.strategy, jax.default_backend(), mesh.size)
            for s in specs:
                if s.config.batch_size % options.data_parallel:
                    raise ValueError(f"batch size {s.config.batch_size} does not split over {options.data_parallel} "
                                     "data-parallel devices")
            if options.runs_per_device < 0:
                raise ValueError(f"runs_per_device must be >= 0, got {options.runs_per_device}")
            plans = [plan_run(s, data) for s in specs]
            trainers = {}
            for s in specs:
                if sweep_config(s.config) not in trainers:  # one trainer per sweep (schedules share it)
                    trainers[sweep_config(s.config)] = make_trainer(sweep_config(s.config), data)
        except SettingsError:
            raise
        except ValueError as e:
            raise SettingsError(str(e)) from e
        return cls(specs, data, plans, trainers, options, mesh, None if metrics is None else tuple(metrics))

    def trainer(self, index: int) -> Trainer:
        return self.trainers[sweep_config(self.specs[index].config)]

    def plan_layout(self, saved: dict | None = None) -> SweepLayout:
        """The strategy rule and memory sizing, or the layout a resumed study started with."""
        if saved is not None:
            if self.options.strategy not in ("auto", saved["strategy"]):
                raise SettingsError(f"cannot resume: the sweep ran with strategy {saved['strategy']!r}, not "
                                    f"{self.options.strategy!r}; leave --strategy on auto")
            try:
                choose_strategy(saved["strategy"], jax.default_backend(), self.mesh.size)  # valid on these devices?
            except ValueError as e:
                raise SettingsError(f"cannot resume here: {e}") from e
            return SweepLayout(saved["strategy"], self.mesh, int(saved["runs_per_chunk"]))
        strategy = choose_strategy(self.options.strategy, jax.default_backend(), self.mesh.size)
        axis = runs_axis_size(self.mesh)
        if self.options.runs_per_device:
            return SweepLayout(strategy, self.mesh, self.options.runs_per_device * axis)
        per_device = len(self.specs)
        reserved = self.data.train.images.nbytes + self.data.test.images.nbytes
        for config, trainer in self.trainers.items():
            index = next(i for i, s in enumerate(self.specs) if sweep_config(s.config) == config)
            run = self.prepare_run(index)
            run_bytes = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves((run.data.plan, run.data.metric_inputs)))
            per_device = min(per_device, auto_runs_per_device(trainer, run.state, self.data.image_shape,
                                                              len(self.specs), axis, strategy, reserved_bytes=reserved,
                                                              run_data_bytes=run_bytes))
        return SweepLayout(strategy, self.mesh, per_device * axis)

    def chunks(self, layout: SweepLayout) -> list[tuple[int, int]]:
        return _chunks(self.specs, layout.runs_per_chunk)

    def prepare_run(self, index: int) -> PreparedRun:
        """Run `index`'s device data and initial state."""
        return prepare_run(self.trainer(index), self.specs[index], self.train_images, self.test, self.plans[index],
                           self.metrics_of(index))

    def metrics_of(self, index: int) -> tuple:
        """The test metrics of run `index`."""
        return self.metrics if self.metrics is not None else run_metrics(bool(self.specs[index].poisons))

    def pending_entries(self) -> list[dict]:
        return [{**s.grid, "status": "pending"} for s in self.specs]

    def run(self, checkpoint_dir: str | pathlib.Path | None, *, settings: dict, summarise: Summarise,
            resume: bool = False,
            keep_checkpoints: int = 3, keep_chunk_states: bool = False, return_states: bool = False,
            tracking: Tracking | None = None, observers: Sequence[SweepObserver] = (),
            on_update: Callable[[list[dict]], None] | None = None,
            on_start: Callable[[dict, dict | None], None] | None = None,
            progress: bool = False, desc: str = "train") -> StudyResult:
        """Trains (or continues, or loads) every run; see the module docstring.

        `settings` (JSON) must equal those of the checkpoints a resume continues. With
        `keep_chunk_states`, every chunk's final checkpoint is kept (a model zoo: `return_states`
        then loads finished chunks instead of retraining them). `observers` see each chunk's
        stacked runs (padding included). `on_start(sweep, resumed_from)` receives, before training
        starts, the layout as results.json records it and the (chunk, step) a resume continues from.
        """
        stop = StopFlag()
        with catch_signals(stop):  # from here on, a signal saves where it is
            keep_chunk_states = keep_chunk_states or return_states  # finished chunks load from their final checkpoint
            manager = checkpoint_manager(checkpoint_dir, max_to_keep=None) if checkpoint_dir is not None else None
            saved = None
            if resume and manager is not None and manager.latest_step() is not None:
                saved = latest_meta(manager)[1]
                changed = _changed(saved.get("settings", {}), settings)
                if changed:
                    raise SettingsError(
                        "cannot resume: the checkpoint was made with different settings ("
                        + ", ".join(f"{k}: {saved['settings'].get(k)!r} -> {settings.get(k)!r}" for k in changed)
                        + "); use the original flags, or --overwrite")
                if "layout" not in saved:
                    raise SettingsError("cannot resume: the checkpoint predates the study runner; use --overwrite")
            layout = self.plan_layout(saved and saved["layout"])
            chunks = self.chunks(layout)
            entries = list(saved["entries"]) if saved else self.pending_entries()
            histories: list[dict | None] = [None] * len(self.specs)
            states: list[Any] = [None] * len(self.specs)
            resumed_from = {"chunk": saved["chunk"], "step": saved["step"]} if saved else None
            if on_start is not None:
                on_start(layout.describe(len(chunks)), resumed_from)
            done_runs = sum(b - a for a, b in chunks[:saved["chunk"]]) if saved else 0
            if saved and saved["finished"]:
                done_runs += chunks[saved["chunk"]][1] - chunks[saved["chunk"]][0]
            bar = tqdm(total=len(self.specs) * self.steps, initial=done_runs * self.steps, desc=desc, unit="run-step",
                       disable=not progress)

            def is_chunk_final(global_step: int) -> bool:
                return keep_chunk_states and global_step % self.steps == 0

            def restore_chunk(global_step: int, prepared: list[PreparedRun], size: int) -> tuple[Any, dict]:
                """A chunk's host states (its real runs only) and metadata from a checkpoint saved with
                `size` (padded) runs, whatever the device count now."""
                target = stack_trees([p.state for p in prepared + [prepared[-1]] * (size - len(prepared))])
                _, restored, meta = restore_step(manager, global_step, target)
                return jax.tree.map(lambda x: np.asarray(x)[:len(prepared)], to_host(restored)), meta

            def checkpoint(index: int, states, hist, pending, finished: bool, extra, wall: float, padded: int):
                if manager is None:
                    return
                start = chunks[index][0]
                # a finished chunk saves at its last step even when all its runs diverged before it
                step = self.steps if finished else int(np.max(to_host(states.step)))
                meta = {"chunk": index, "step": step, "finished": finished, "padded_runs": padded,
                        "histories": hist, "pending": np.asarray(pending, np.float32).tolist(),
                        "entries": entries, "settings": settings, "extra": extra, "wall_time_s": wall,
                        "layout": {"strategy": layout.strategy, "runs_per_chunk": layout.runs_per_chunk}}
                save(manager, start * self.steps + step, states, meta)
                prune(manager, keep_checkpoints, is_chunk_final)

            for index, (start, stop_) in enumerate(chunks):
                real = stop_ - start
                mid_chunk = saved is not None and saved["chunk"] == index and not saved["finished"]
                finished = saved is not None and (index < saved["chunk"] or (index == saved["chunk"]
                                                                              and saved["finished"]))
                if finished and not return_states:
                    continue
                if stop():  # a signal before this chunk started: everything before it is saved
                    raise Interrupted(stop.signum, 0)
                trainer = self.trainer(start)
                prepared = [self.prepare_run(i) for i in range(start, stop_)]
                pad_to = runs_axis_size(layout.mesh) if layout.strategy == "vmap" else 1
                if finished:  # a finished chunk of a zoo: load its final states
                    final_step = (start + 1) * self.steps
                    host, meta = restore_chunk(final_step, prepared, meta_at(manager, final_step)["padded_runs"])
                    states[start:stop_] = _runs_of(host, real)
                    histories[start:stop_] = meta["histories"][:real]
                    continue
                hist = [empty_history(self.metrics_of(i)) for i in range(start, stop_)]
                pending, extra_restored, wall_before = None, None, 0.0
                padded = pad_runs(prepared, pad_to)
                stacked = stack_trees([p.state for p in padded])
                if mid_chunk:  # continue from the checkpoint, on however many devices there are now
                    host, meta = restore_chunk(manager.latest_step(), prepared, saved["padded_runs"])
                    extra_rows = len(padded) - real
                    stacked = jax.device_put(jax.tree.map(
                        lambda x: np.concatenate([x] + [x[-1:]] * extra_rows), host))
                    hist = meta["histories"][:real]
                    pending = np.asarray(meta["pending"], np.float32)[:real]
                    pending = np.concatenate([pending] + [pending[-1:]] * extra_rows)
                    extra_restored, wall_before = meta["extra"], float(meta["wall_time_s"])
                    bar.update(int(meta["step"]) * real)
                hist = hist + [copy.deepcopy(hist[-1]) for _ in range(len(padded) - real)]
                tracker = None
                if tracking is not None:
                    tracker = tracking(trainer, self.specs[start:stop_], prepared,
                                       _runs_of(to_host(stacked.params), real), extra_restored)
                    if isinstance(tracker, (list, tuple)):  # one RunTracker per run
                        tracker = PerRunTrackers(tracker)
                chunk_observers = ([tracker] if tracker is not None else []) + list(observers)
                started = time.time()
                metrics = self.metrics_of(start)

                def wall() -> float:
                    return wall_before + time.time() - started

                def tracker_records() -> list | None:
                    return tracker.records() if tracker is not None else None

                def update(status_of: Callable[[int], str]) -> None:
                    per_run_wall = round(wall() / real, 3)
                    records = tracker_records()
                    for i in range(real):
                        tracked = records[i] if records is not None else None
                        entry = summarise(self.specs[start + i], hist[i], prepared[i].stats, tracked)
                        entries[start + i] = {**entry, "status": status_of(i), "wall_time_s": per_run_wall}
                    if on_update is not None:
                        on_update(entries)

                def running(i: int) -> str:
                    return "diverged" if hist[i]["diverged"] else "running"

                def stream(step, states_, values):
                    update(running)

                def on_checkpoint(states_, hist_, pending_, index=index, padded=len(padded)):
                    update(running)
                    checkpoint(index, states_, hist_, pending_, False, tracker_records(), wall(), padded)

                placed = place_states(stacked, layout.strategy, layout.mesh)
                final, hist = train_sweep(
                    trainer, placed, stack_runs([p.data for p in padded]), steps=self.steps,
                    eval_every=self.specs[start].config.eval_interval, strategy=layout.strategy, mesh=layout.mesh,
                    metrics=metrics, histories=hist, pending=pending, observers=chunk_observers + [stream],
                    checkpoint_every=self.specs[start].config.checkpoint_every, on_checkpoint=on_checkpoint,
                    on_progress=lambda n, k=real: bar.update(n * k), should_stop=stop)
                step = int(np.max(to_host(final.step)))  # diverged runs stop early
                if step < self.steps and not all(h["diverged"] for h in hist[:real]):
                    bar.close()
                    raise Interrupted(stop.signum or signal.SIGINT, step)
                update(lambda i: "diverged" if hist[i]["diverged"] else "finished")
                checkpoint(index, final, hist, np.zeros((len(padded), 0)), True, tracker_records(), wall(),
                           len(padded))
                bar.n = stop_ * self.steps  # diverged runs stop early
                bar.refresh()
                if return_states:
                    states[start:stop_] = _runs_of(to_host(final), real)
                histories[start:stop_] = hist[:real]
                if stop() and index < len(chunks) - 1:
                    bar.close()
                    raise Interrupted(stop.signum, step)
        bar.close()
        if manager is not None:
            manager.close()
        return StudyResult(entries, histories, states if return_states else None, resumed_from)
