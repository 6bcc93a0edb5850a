"""Training: the neutral config, train state and jitted steps, test-set evaluation, runs and
sweeps over runs, the loop, device meshes and checkpoints."""

from anatomy_jax.train.airbench_parts import (LookaheadState, alternating_flip, alternating_flip_mask, ema_update,
                                              lookahead_decay, lookahead_finish, lookahead_init, lookahead_step,
                                              tta_logits)
from anatomy_jax.train.checkpoint import checkpoint_manager, latest_meta, meta_at, prune, restore_latest, restore_step, save
from anatomy_jax.train.config import TrainConfig, make_trainer, train_config_of
from anatomy_jax.train.evaluation import (ClassificationMetrics, Metric, MetricContext, TestSet, batch_test_set, evaluate,
                                          metric_inputs, to_float)
from anatomy_jax.train.loop import (DEFAULT_METRICS, Observer, SweepObserver, chunk_ends, empty_history, metric_names,
                                    per_run, train_loop, train_sweep)
from anatomy_jax.train.optim import OPTIMIZERS, SCHEDULES, make_optimizer, schedule_shape, with_learning_rate
from anatomy_jax.train.runs import (PreparedRun, RunData, RunPlan, RunSpec, SweepData, pad_runs, plan_run,
                                    prepare_run, run_metrics, stack_runs, stack_trees, unstack_tree)
from anatomy_jax.train.sharding import (DATA, RUNS, initialize_multihost, is_primary_process, make_sweep_mesh, put,
                                        runs_axis_size, to_host)
from anatomy_jax.train.steps import AdversarialTraining, Trainer, TrainState, all_finite, cross_entropy
from anatomy_jax.train.strategies import STRATEGIES, auto_runs_per_device, choose_strategy, place_states

__all__ = [
    "LookaheadState", "alternating_flip", "alternating_flip_mask", "ema_update", "lookahead_decay",
    "lookahead_finish", "lookahead_init", "lookahead_step", "tta_logits",
    "DATA", "DEFAULT_METRICS", "OPTIMIZERS", "RUNS", "SCHEDULES", "STRATEGIES", "AdversarialTraining",
    "ClassificationMetrics", "Metric", "MetricContext", "metric_inputs", "Observer", "PreparedRun", "RunData", "RunPlan", "RunSpec", "SweepData",
    "SweepObserver", "TestSet", "TrainConfig", "TrainState", "Trainer", "all_finite", "auto_runs_per_device",
    "batch_test_set", "checkpoint_manager", "choose_strategy", "chunk_ends", "cross_entropy", "empty_history",
    "evaluate", "initialize_multihost", "is_primary_process", "latest_meta", "make_optimizer", "make_sweep_mesh",
    "make_trainer", "metric_names", "pad_runs", "per_run", "place_states", "plan_run", "prepare_run", "put",
    "meta_at", "prune", "restore_latest", "restore_step", "run_metrics", "runs_axis_size", "save", "schedule_shape", "stack_runs", "stack_trees",
    "to_float", "to_host", "train_config_of", "train_loop", "train_sweep", "unstack_tree", "with_learning_rate",
]
