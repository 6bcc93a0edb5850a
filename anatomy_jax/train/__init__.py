"""Train state, jitted steps, optimizers and schedules, the run loop, and checkpoints."""

from anatomy_jax.train.checkpoint import checkpoint_manager, latest_meta, restore_latest, save
from anatomy_jax.train.loop import Observer, RunData, acquisition_step, empty_history, train_loop
from anatomy_jax.train.optim import OPTIMIZERS, SCHEDULES, make_optimizer, schedule_shape, with_learning_rate
from anatomy_jax.train.steps import EvalData, Trainer, TrainState, cross_entropy, target_margin, to_float

__all__ = [
    "OPTIMIZERS", "SCHEDULES", "EvalData", "Observer", "RunData", "TrainState", "Trainer", "acquisition_step",
    "checkpoint_manager", "cross_entropy", "empty_history", "latest_meta", "make_optimizer", "restore_latest",
    "save", "schedule_shape", "target_margin", "to_float", "train_loop", "with_learning_rate",
]
