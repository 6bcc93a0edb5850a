#!/usr/bin/env python
"""Training throughput (images/s): anatomy_jax vs the PyTorch peer, PreAct ResNet-18 and the small CNN.

Both train on random CIFAR-shaped data (32x32x3, 10 classes; throughput does not depend on pixel
values) with SGD (momentum 0.9, Nesterov, weight decay 5e-4, lr 0.1), no augmentation, as the peer
(../shared/peers/torch_peer.py) does. The JAX side is the library's own training step
(`Trainer.train_steps`: batch gathered from the device-resident dataset, poison stamping, update),
fused by its rule (a `lax.scan` of steps on GPU/TPU, jitted single steps on CPU). `--bf16` runs
the models' compute in bfloat16 on both sides (the peer's autocast works on CUDA only).
Both sides run in this process, one after the other; compilation/warm-up is excluded. Prints
one JSON line. PyTorch is optional (`pip install -e ".[bench]"`); without it only JAX is timed.

    python benchmarks/train_throughput.py [--batch-size 128] [--steps 10] [--bf16] [--models ...]
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np

from anatomy_jax.models import SmallCNN, create_model
from anatomy_jax.poison import clean_plan, make_patterns, PatternSpec
from anatomy_jax.train import Trainer, make_optimizer
from _peer import load_peer  # benchmarks/_peer.py (the script's directory is on sys.path)

MODELS = ("preact_resnet18", "cnn")


def jax_model(name: str, dtype):
    if name == "cnn":  # the peer's SmallCNN: 32-64-128 convs with 2x2 pools, then one linear layer
        return SmallCNN(num_classes=10, conv_channels=(32, 64, 128), hidden=0, dtype=dtype)
    return create_model(name, 10, dtype=dtype)


def jax_images_per_s(name: str, batch: int, steps: int, bf16: bool) -> float:
    model = jax_model(name, jnp.bfloat16 if bf16 else jnp.float32)
    tx = make_optimizer("sgd", total_steps=10 ** 6, momentum=0.9, nesterov=True, weight_decay=5e-4)
    trainer = Trainer(model, tx, batch_size=batch)
    rng = np.random.default_rng(0)
    n = batch * 8
    images = jnp.asarray(rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8))
    plan = clean_plan(rng.integers(0, 10, n))
    patterns = make_patterns([PatternSpec()], (32, 32, 3))
    state = trainer.init(jax.random.key(0), jax.random.key(1), images, 0.1)
    state, _, _ = trainer.train_steps(state, images, plan, patterns, steps)  # compile the same program
    jax.block_until_ready(state)
    start = time.perf_counter()
    state, _, finite = trainer.train_steps(state, images, plan, patterns, steps)
    jax.block_until_ready(state)
    return batch * steps / (time.perf_counter() - start)


def torch_images_per_s(peer, name: str, batch: int, steps: int, bf16: bool) -> float:
    model = peer.PreActResNet18() if name == "preact_resnet18" else peer.SmallCNN()
    return peer.train_throughput(model, batch, steps, amp=bf16)["img_per_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    on_cpu = jax.default_backend() == "cpu"
    parser.add_argument("--batch-size", type=int, default=128 if on_cpu else 512)
    parser.add_argument("--steps", type=int, default=5 if on_cpu else 60, help="timed steps per model")
    parser.add_argument("--bf16", action="store_true", help="bfloat16 compute on both sides")
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated: {', '.join(MODELS)}")
    args = parser.parse_args()
    peer = load_peer()
    rows = []
    for name in args.models.split(","):
        if name not in MODELS:
            parser.error(f"unknown model {name!r}; choose from {', '.join(MODELS)}")
        ours = jax_images_per_s(name, args.batch_size, args.steps, args.bf16)
        theirs = None if peer is None else torch_images_per_s(peer, name, args.batch_size, args.steps, args.bf16)
        rows.append({"model": name, "jax_img_per_s": round(ours, 1),
                     "torch_img_per_s": None if theirs is None else round(theirs, 1),
                     "ratio_jax_over_torch": None if theirs is None else round(ours / theirs, 3)})
    device = jax.devices()[0]
    print(json.dumps({"device": f"{device.platform} ({device.device_kind})", "jax": jax.__version__,
                      "torch": None if peer is None else peer.torch.__version__, "batch_size": args.batch_size,
                      "precision": "bf16" if args.bf16 else "fp32", "results": rows}))


if __name__ == "__main__":
    main()
