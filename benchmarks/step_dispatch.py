#!/usr/bin/env python
"""Per-step time of the training step: a Python loop of jitted single steps vs one `lax.scan`.

Prints both timings and their ratio side by side in one process, for the model and dataset given
(default: the small CNN on digits, batch 128), so the rule in `Trainer.fused` can be checked on
any backend:

    python benchmarks/step_dispatch.py [--model cnn] [--steps 50] [--repeats 3]
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import jax
import jax.numpy as jnp

from anatomy_jax.experiment.pattern_rate import PatternRateConfig, load_study_data, make_trainer, prepare_run


def time_per_step(trainer, config, data, steps: int, repeats: int) -> float:
    images = jnp.asarray(data.train.images)
    run_data, _, state = prepare_run(config, trainer, data, images, config.grid()[0])
    state, losses, _ = trainer.train_steps(state, images, run_data.plan, run_data.patterns, steps)  # compile
    losses.block_until_ready()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        state, losses, _ = trainer.train_steps(state, images, run_data.plan, run_data.patterns, steps)
        losses.block_until_ready()
        best = min(best, (time.perf_counter() - start) / steps)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="cnn")
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    config = PatternRateConfig(dataset=args.dataset, data_dir=args.data_dir, model=args.model, width=args.width)
    data = load_study_data(config)
    base = make_trainer(config, data)
    loop = time_per_step(dataclasses.replace(base, fuse_steps=False), config, data, args.steps, args.repeats)
    scan = time_per_step(dataclasses.replace(base, fuse_steps=True), config, data, args.steps, args.repeats)
    device = jax.devices()[0]
    print(f"device: {device.platform} ({device.device_kind}); model {args.model} x{args.width:g} on {args.dataset}, "
          f"batch {config.batch_size}")
    print(f"python loop of jitted steps: {loop * 1e3:8.2f} ms/step")
    print(f"lax.scan of {args.steps} steps:       {scan * 1e3:8.2f} ms/step")
    print(f"scan / loop time ratio: {scan / loop:.2f}  (rule picks {'scan' if base.fused else 'loop'} here)")


if __name__ == "__main__":
    main()
