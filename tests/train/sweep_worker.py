"""Runs a tiny sweep in a fresh process for the multi-device and multi-process tests.

    python -m tests.train.sweep_worker devices OUT          # 8 forced host devices (set XLA_FLAGS first)
    python -m tests.train.sweep_worker batch_norm OUT       # 2 forced host devices
    python -m tests.train.sweep_worker process OUT ID PORT  # one of 2 processes (jax.distributed)

Prints one JSON line: {layout name: [per-run {clean_accuracy, train_loss, diverged}]}.
"""

import dataclasses
import json
import os
import pathlib
import sys

import jax

from anatomy_jax.experiment.pattern_rate import PatternRateConfig, train_and_evaluate

# Six runs: padding is needed on 4 and 8 devices. Small enough to compile and train in seconds.
CONFIG = PatternRateConfig(seeds=(0,), frequencies=(0.1,), correlations=(0.0, 1.0), learning_rates=(0.05, 0.1, 0.2), steps=12,
                           eval_every=6, checkpoint_every=6, batch_size=32, width=0.25, train_size=512)


def summary(results):
    return [{k: r[k] for k in ("clean_accuracy", "attack_success_rate", "train_loss", "diverged")}
            for r in results["runs"]] + [results["sweep"]]


class _Stop(Exception):
    pass


def _stop_at_12(step, states, metrics):
    if step >= 12:
        raise _Stop


def resumed_on_all_devices(out):
    """The grid cut on one device (vmap, checkpoint at step 6 of 12), resumed on every device."""
    cut = dataclasses.replace(CONFIG, devices=1, strategy="vmap")
    try:
        train_and_evaluate(cut, out, observers=[_stop_at_12], progress=False)
    except _Stop:
        pass
    results = train_and_evaluate(dataclasses.replace(CONFIG, resume=True), out, progress=False)
    assert results["resumed_from_step"] == 6, results["resumed_from_step"]
    return results


# A batch-norm model: 2-way data parallelism must normalise with the whole batch's statistics.
BATCH_NORM = PatternRateConfig(seeds=(0,), model="resnet18", width=0.25, frequencies=(0.1,), correlations=(1.0,),
                               learning_rates=(0.05,), steps=60, eval_every=20, checkpoint_every=0, batch_size=64)


def one_step_differences(config, steps):
    """Along a one-device trajectory, the largest relative parameter difference after one step
    taken from the same state on one device and 2-way data parallel (one value per step)."""
    import jax.numpy as jnp
    import numpy as np

    from anatomy_jax.experiment.pattern_rate import load_study_data, make_trainer, prepare_run
    from anatomy_jax.train import make_sweep_mesh, stack_runs, stack_trees, to_host
    from anatomy_jax.train.strategies import VmapEngine

    data = load_study_data(config)
    trainer = make_trainer(config, data)
    run = prepare_run(config, trainer, data, jnp.asarray(data.train.images), config.grid()[0])
    one = VmapEngine(trainer, (), stack_trees([run.state]), stack_runs([run.data]), make_sweep_mesh(1, 1), 1)
    out = []
    for _ in range(steps):
        split = VmapEngine(trainer, (), jax.device_put(to_host(one.states)), stack_runs([run.data]),
                           make_sweep_mesh(2, 2), 1)
        for engine in (one, split):
            engine.advance(1, np.array([True]), lambda: False)
        a, b = to_host(one.states.params), to_host(split.states.params)
        out.append(max(jax.tree.leaves(jax.tree.map(
            lambda x, y: float(np.abs(x - y).max() / (np.abs(x).max() + 1e-12)), a, b))))
    return out


def divergence_control(config, steps):
    """Relative parameter differences after `steps` steps from one state: 2-way data parallel vs one
    device, and one device vs itself with every parameter nudged by a relative 1e-6 (a float-rounding-
    sized change). If the split step is right, the first is of the order of the second: the gap is
    amplified rounding, not a different computation."""
    import jax.numpy as jnp
    import numpy as np

    from anatomy_jax.experiment.pattern_rate import load_study_data, make_trainer, prepare_run
    from anatomy_jax.train import make_sweep_mesh, stack_runs, stack_trees, to_host
    from anatomy_jax.train.strategies import VmapEngine

    data = load_study_data(config)
    trainer = make_trainer(config, data)
    run = prepare_run(config, trainer, data, jnp.asarray(data.train.images), config.grid()[0])
    start = stack_trees([run.state])
    nudged = start._replace(params=jax.tree.map(lambda x: x * (1 + 1e-6), start.params))
    engines = {"one": VmapEngine(trainer, (), start, stack_runs([run.data]), make_sweep_mesh(1, 1), 1),
               "nudged": VmapEngine(trainer, (), nudged, stack_runs([run.data]), make_sweep_mesh(1, 1), 1),
               "split": VmapEngine(trainer, (), jax.device_put(to_host(start)), stack_runs([run.data]),
                                   make_sweep_mesh(2, 2), 1)}
    for _ in range(steps):
        for engine in engines.values():
            engine.advance(1, np.array([True]), lambda: False)
    params = {k: to_host(e.states.params) for k, e in engines.items()}

    def gap(a, b):
        return max(jax.tree.leaves(jax.tree.map(
            lambda x, y: float(np.abs(x - y).max() / (np.abs(x).max() + 1e-12)), params[a], params[b])))

    return {"data_parallel_vs_one": gap("split", "one"), "nudged_vs_one": gap("nudged", "one")}


def main(argv):
    mode, out = argv[0], pathlib.Path(argv[1])
    if mode == "batch_norm":
        assert jax.device_count() == 2, jax.devices()
        layouts = {"one_device": dict(devices=1, strategy="vmap"), "data_parallel": dict(data_parallel=2)}
        found = {name: summary(train_and_evaluate(dataclasses.replace(BATCH_NORM, **kw), out / name, progress=False))
                 for name, kw in layouts.items()}
        found["one_step_differences"] = one_step_differences(BATCH_NORM, steps=10)
        found["control"] = divergence_control(BATCH_NORM, steps=BATCH_NORM.steps)
        print(json.dumps(found))
        return
    if mode == "devices":
        assert jax.device_count() == 8, jax.devices()
        layouts = {"sharded": dict(), "single": dict(devices=1, strategy="vmap"), "data_parallel": dict(data_parallel=2)}
        found = {name: summary(train_and_evaluate(PatternRateConfig(**{**vars(CONFIG), **kw}), out / name,
                                                  progress=False))
                 for name, kw in layouts.items()}
        found["resumed"] = summary(resumed_on_all_devices(out / "resumed"))
        print(json.dumps(found))
        return
    # the --multihost path, configured through the environment as the README describes
    os.environ.update(JAX_COORDINATOR_ADDRESS=f"localhost:{argv[3]}", JAX_NUM_PROCESSES="2", JAX_PROCESS_ID=argv[2])
    results = train_and_evaluate(dataclasses.replace(CONFIG, multihost=True), out, progress=False)
    print(json.dumps({"two_processes": summary(results)}))


if __name__ == "__main__":
    main(sys.argv[1:])
