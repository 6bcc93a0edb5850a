"""Train every seed of one model as one sweep, with orbax checkpoints to resume from or load.

The studies that train a model zoo (weight change, representation comparison) share this: the
runs of `config.grid()` (one per seed) advance together (`anatomy_jax.train.sweep`), checkpoints
under the manager's directory hold the stacked states, the metric histories, the strategy and
the study's `settings`, and a later call with the same settings continues from the newest
checkpoint (or, when it is final, just loads it). Different settings are refused.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import jax
import orbax.checkpoint as ocp
from tqdm.auto import tqdm

from anatomy_jax.data import Dataset
from anatomy_jax.experiment.pattern_rate import PatternRateConfig, make_trainer, prepare_run
from anatomy_jax.train import (SweepObserver, Trainer, TrainState, choose_strategy, latest_meta, make_sweep_mesh,
                               place_states, restore_latest, save, stack_runs, stack_trees, to_host, train_sweep,
                               unstack_tree)

# tracking(params of each run where training starts, restored extra meta or None)
#   -> (sweep observers, a function returning the extra meta to checkpoint)
Tracking = Callable[[Sequence[Any], "dict | None"], tuple[list[SweepObserver], Callable[[], dict]]]


@dataclasses.dataclass
class TrainedSeeds:
    """The runs of one model after training: stacked states (leading axis = run) and histories."""

    trainer: Trainer
    runs: list[dict[str, Any]]
    states: TrainState
    histories: list[dict]
    strategy: str

    def variables(self) -> list[dict[str, Any]]:
        """Each run's flax variables ({"params"[, "batch_stats"]}), one device pytree per run."""
        out = []
        for state in unstack_tree(to_host(self.states)):
            out.append({"params": state.params, **({"batch_stats": state.batch_stats} if state.batch_stats else {})})
        return out


def train_seeds(config: PatternRateConfig, data: Dataset, *, settings: dict[str, Any], strategy: str = "auto",
                manager: ocp.CheckpointManager | None = None, checkpoint_every: int = 0,
                tracking: Tracking | None = None, progress: bool = False, desc: str = "train") -> TrainedSeeds:
    """Trains the runs of `config.grid()` together for `config.steps` steps (evaluated every
    `config.eval_interval`); with a `manager`, checkpoints every `checkpoint_every` steps and at
    the end, and starts from its newest checkpoint when there is one (made with `settings`)."""
    trainer = make_trainer(config, data)
    images = jax.numpy.asarray(data.train.images)
    runs = config.grid()
    prepared = [prepare_run(config, trainer, data, images, run) for run in runs]
    saved = latest_meta(manager) if manager is not None else None
    if saved is not None and saved[1]["settings"] != settings:
        changed = sorted(k for k in set(settings) | set(saved[1]["settings"])
                         if settings.get(k) != saved[1]["settings"].get(k))
        raise ValueError(f"cannot continue from the checkpoints in {manager.directory}: they were made with "
                         f"different settings ({', '.join(changed)}); use the original flags, another "
                         "checkpoint directory, or --overwrite")
    # a resumed sweep keeps the strategy it started with
    strategy = saved[1]["strategy"] if saved is not None else choose_strategy(strategy, jax.default_backend(), 1)
    mesh = make_sweep_mesh(1)
    states = place_states(stack_trees([p[2] for p in prepared]), strategy, mesh)
    histories, extra = None, None
    if saved is not None:
        _, states, restored = restore_latest(manager, states)
        histories, extra = restored["histories"], restored.get("extra")
    observers, extra_meta = [], dict
    if tracking is not None:
        host = to_host(states.params)
        observers, extra_meta = tracking([jax.tree.map(lambda x, r=r: x[r], host) for r in range(len(runs))], extra)

    def checkpoint(states, histories):
        save(manager, int(to_host(states.step)[0]), states,
             {"histories": histories, "strategy": strategy, "settings": settings, "extra": extra_meta()})

    start = int(to_host(states.step)[0])
    bar = tqdm(total=config.steps, initial=start, desc=desc, unit="step", disable=not progress or start >= config.steps)
    states, histories = train_sweep(
        trainer, states, stack_runs([p[0] for p in prepared]), steps=config.steps, eval_every=config.eval_interval,
        strategy=strategy, mesh=mesh, histories=histories, observers=observers,
        checkpoint_every=checkpoint_every if manager is not None else 0, on_checkpoint=checkpoint,
        on_progress=bar.update)
    bar.close()
    if manager is not None and manager.latest_step() != config.steps:
        checkpoint(states, histories)
    return TrainedSeeds(trainer, runs, states, histories, strategy)
