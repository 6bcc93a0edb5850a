#!/usr/bin/env python
"""Per-example-gradient throughput: anatomy_jax vs PyTorch's `torch.func.vmap(grad)`.

The model is the PyTorch peer's small CNN (../shared/peers/torch_peer.py: 3x3 convs of 32, 64,
128 channels, each ReLU + 2x2 max pool, then a linear classifier) on random 32x32x3 inputs; in
this library that is `SmallCNN(conv_channels=(32, 64, 128), hidden=0)`. Both sides run in this
process on the same device class, one after the other. Prints one JSON line with examples/s and
the ratio. PyTorch is optional (`pip install -e ".[bench]"`; on CPU-only machines the CPU build);
without it only the JAX number is printed.

    python benchmarks/per_example_grads.py [--batch-sizes 128,256] [--steps 5] [--chunk-size 16]
"""

from __future__ import annotations

import argparse
import json
import time

import jax

from anatomy_jax.models import SmallCNN
from anatomy_jax.probes import model_loss_fn, per_example_grads
from _peer import load_peer  # benchmarks/_peer.py (the script's directory is on sys.path)


def jax_examples_per_s(batch: int, steps: int, chunk_size: int | None) -> float:
    model = SmallCNN(num_classes=10, conv_channels=(32, 64, 128), hidden=0)
    x = jax.random.normal(jax.random.key(0), (batch, 32, 32, 3))
    y = jax.random.randint(jax.random.key(1), (batch,), 0, 10)
    params = model.init(jax.random.key(2), x[:1])["params"]
    loss_fn = model_loss_fn(model.apply)
    fn = jax.jit(lambda p, x, y: per_example_grads(loss_fn, p, x, y, chunk_size=chunk_size))
    jax.block_until_ready(fn(params, x, y))
    start = time.perf_counter()
    for _ in range(steps):
        out = fn(params, x, y)
    jax.block_until_ready(out)
    return batch * steps / (time.perf_counter() - start)


def torch_examples_per_s(batch: int, steps: int) -> float | None:
    peer = load_peer()
    return None if peer is None else peer.per_example_grads(batch, steps)["examples_per_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-sizes", default="128,256")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--chunk-size", type=int, default=16,
                        help="examples per vmapped chunk (0: the whole batch at once)")
    args = parser.parse_args()
    device = jax.devices()[0]
    rows = []
    for batch in [int(b) for b in args.batch_sizes.split(",")]:
        ours = jax_examples_per_s(batch, args.steps, args.chunk_size or None)
        theirs = torch_examples_per_s(batch, args.steps)
        rows.append({"batch": batch, "jax_examples_per_s": round(ours, 1),
                     "torch_examples_per_s": None if theirs is None else round(theirs, 1),
                     "ratio_jax_over_torch": None if theirs is None else round(ours / theirs, 3)})
    print(json.dumps({"device": f"{device.platform} ({device.device_kind})", "jax": jax.__version__,
                      "model": "SmallCNN 32-64-128 (peer)", "chunk_size": args.chunk_size, "results": rows}))


if __name__ == "__main__":
    main()
