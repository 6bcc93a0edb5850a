"""Train state, jitted steps, optimizers and schedules, the run loop, sweeps over runs, device meshes
and checkpoints."""

from anatomy_jax.train.checkpoint import checkpoint_manager, latest_meta, restore_latest, save
from anatomy_jax.train.loop import Observer, RunData, acquisition_step, empty_history
from anatomy_jax.train.optim import OPTIMIZERS, SCHEDULES, make_optimizer, schedule_shape, with_learning_rate
from anatomy_jax.train.sharding import (DATA, RUNS, initialize_multihost, is_primary_process, make_sweep_mesh, put,
                                       runs_axis_size, to_host)
from anatomy_jax.train.sweep import (STRATEGIES, SweepData, SweepObserver, auto_runs_per_device, choose_strategy,
                                     pad_runs, per_run, place_states, stack_runs, stack_trees, train_loop,
                                     train_sweep, unstack_tree)
from anatomy_jax.train.steps import (AdversarialTraining, EvalData, Trainer, TrainState, cross_entropy, target_margin,
                                     to_float)

__all__ = [
    "DATA", "RUNS", "STRATEGIES", "SweepData", "SweepObserver", "auto_runs_per_device", "choose_strategy",
    "initialize_multihost", "is_primary_process", "make_sweep_mesh", "pad_runs", "per_run", "place_states", "put",
    "runs_axis_size",
    "stack_runs", "stack_trees", "to_host", "train_sweep", "unstack_tree",
    "OPTIMIZERS", "SCHEDULES", "AdversarialTraining", "EvalData", "Observer", "RunData", "TrainState", "Trainer",
    "acquisition_step",
    "checkpoint_manager", "cross_entropy", "empty_history", "latest_meta", "make_optimizer", "restore_latest",
    "save", "schedule_shape", "target_margin", "to_float", "train_loop", "with_learning_rate",
]
