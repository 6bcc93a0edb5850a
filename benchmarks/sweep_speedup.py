#!/usr/bin/env python
"""Runs per hour of a K-run sweep (vmap and loop strategies) vs the same K runs one after another.

The runs are those of `experiments/pattern_rate.py` with its default model and data (small CNN,
digits, batch 128; K runs = frequencies x correlations x learning rates x seeds cycled through the
default grid), each `--steps` steps with 4 evaluations. "separate" trains each run alone with
`train_loop` (compiled once and reused, so the baseline pays no recompilation); "loop" and
"vmap" train them together with `train_sweep`. Every timing excludes compilation (each variant
first runs one evaluation interval of the same K runs) and run preparation (identical for all);
each variant is timed `--repeats` times, alternating with the others, and the fastest is kept. Prints one JSON line:

    {"device": ..., "model": ..., "sweeps": [{"K": 4, "runs_per_hour": ..., "vmap_speedup": ...,
      "loop_speedup": ..., "chosen": "loop", "chosen_speedup": ...}, ...]}

with speedups relative to separate runs, and the strategy `choose_strategy` picks here.

    python benchmarks/sweep_speedup.py [--ks 1,4,16,64] [--steps 80] [--repeats 2] [--model cnn]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

import jax
import jax.numpy as jnp

from anatomy_jax.experiment.pattern_rate import PatternRateConfig, load_study_data, make_trainer, prepare_run
from anatomy_jax.train import (choose_strategy, make_sweep_mesh, pad_runs, place_states, runs_axis_size, stack_runs,
                               stack_trees, to_host, train_loop, train_sweep)


def grid(config: PatternRateConfig, k: int) -> list[dict]:
    """K runs: the default grid's settings, with seeds counting up once it is used up."""
    base = config.grid()
    return [{**base[i % len(base)], "seed": i // len(base)} for i in range(k)]


def time_separate(config, trainer, data, images, runs) -> float:
    prepared = [prepare_run(config, trainer, data, images, run) for run in runs]
    start = time.perf_counter()
    for run_data, _, state in prepared:
        state, _ = train_loop(trainer, state, run_data, steps=config.steps, eval_every=config.eval_interval)
    jax.block_until_ready(state)
    return time.perf_counter() - start


def time_sweep(config, trainer, data, images, runs, strategy, mesh) -> float:
    prepared = [prepare_run(config, trainer, data, images, run) for run in runs]
    if strategy == "vmap":
        prepared = pad_runs(prepared, runs_axis_size(mesh))
    sweep_data = stack_runs([p[0] for p in prepared])
    states = place_states(stack_trees([p[2] for p in prepared]), strategy, mesh)
    jax.block_until_ready(states)
    start = time.perf_counter()
    states, _ = train_sweep(trainer, states, sweep_data, steps=config.steps, eval_every=config.eval_interval,
                            strategy=strategy, mesh=mesh)
    to_host(states.step)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ks", default="1,4,16,64", help="sweep sizes (comma-separated)")
    parser.add_argument("--steps", type=int, default=80, help="training steps per run")
    parser.add_argument("--repeats", type=int, default=2, help="timed repetitions, alternating variants (min kept)")
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--model", default="cnn")
    parser.add_argument("--strategies", default="separate,loop,vmap",
                        help="what to time (comma-separated; the loop strategy needs a single device)")
    args = parser.parse_args()
    config = PatternRateConfig(dataset=args.dataset, data_dir=args.data_dir, model=args.model, steps=args.steps)
    config = dataclasses.replace(config, eval_every=max(1, config.steps // 4))
    data = load_study_data(config)
    trainer = make_trainer(config, data)
    images = jnp.asarray(data.train.images)
    mesh = make_sweep_mesh()
    strategies = args.strategies.split(",")
    if mesh.size > 1 and "loop" in strategies:
        strategies.remove("loop")
    chosen = choose_strategy("auto", jax.default_backend(), mesh.size)
    # One evaluation interval of the same K runs compiles every program a timed run uses.
    warm = dataclasses.replace(config, steps=config.eval_interval)
    sweeps = []
    for k in (int(v) for v in args.ks.split(",")):
        runs = grid(config, k)
        seconds = {}
        for name in strategies:
            fn = time_separate if name == "separate" else time_sweep
            fn(warm, trainer, data, images, runs, *(() if name == "separate" else (name, mesh)))
        for _ in range(args.repeats):  # alternate the variants, so machine noise hits them alike
            for name in strategies:
                fn = time_separate if name == "separate" else time_sweep
                took = fn(config, trainer, data, images, runs, *(() if name == "separate" else (name, mesh)))
                seconds[name] = min(seconds.get(name, float("inf")), took)
        row = {"K": k, "seconds": {n: round(s, 3) for n, s in seconds.items()}}
        base = seconds.get("separate")
        for name in ("vmap", "loop"):
            if name in seconds and base:
                row[f"{name}_speedup"] = round(base / seconds[name], 3)
        row["chosen"] = chosen
        if chosen in seconds:
            row["runs_per_hour"] = round(k * 3600 / seconds[chosen], 1)
            row["chosen_speedup"] = row.get(f"{chosen}_speedup")
        if base:
            row["separate_runs_per_hour"] = round(k * 3600 / base, 1)
        sweeps.append(row)
    device = jax.devices()[0]
    print(json.dumps({"device": f"{device.platform}:{device.device_kind} x{mesh.size}", "jax": jax.__version__,
                      "model": config.model, "dataset": config.dataset, "steps": config.steps,
                      "batch_size": config.batch_size, "sweeps": sweeps}))


if __name__ == "__main__":
    main()
