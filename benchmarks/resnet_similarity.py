#!/usr/bin/env python
"""Every similarity metric between two full-width ResNet-18s on 2,000 CIFAR-10 images: time and peak memory.

Two full-width ResNet-18s (width 1, seeds 0 and 1, or `--model-b vgg11`) are initialised (or
trained for `--train-steps` steps on the CIFAR-10 subset) and their representations extracted at
relative depths 0.25, 0.5 and 1 (`layer_at_depth`: ResNet-18's layer1 (32x32x64 = 65,536
features), layer2 (16x16x128 = 32,768) and the 512-d penultimate features) of `--n` pixel-exact
CIFAR-10 training images (../shared/data/cifar10/train_exact.npz). Each metric then runs in a
fresh worker process that loads only that depth's representations, so the peak resident memory
it reports (VmHWM, inputs and JAX included) is that metric's own; `inputs_only` is the same
worker doing nothing after loading, the floor every other row includes. Times include
compilation (a researcher's first call).

Metrics: linear CKA (biased, debiased) and minibatch CKA, RBF CKA, Procrustes distance, SVCCA and
PWCCA on n // 10 kept directions (the n >= 10 x dims rule), the flattened ridge map (held-out R^2
and stitched accuracy, ridge chosen on a held-out fifth: a p x q float32 map, 4 GiB at depth
0.5; skipped above 4 GiB, i.e. at depth 0.25 where it would be 16 GiB) and, at convolutional depths, the 1x1-conv map (least squares and `train_stitch` for
`--stitch-steps` steps). Fits use the first 80% of the images, scores the rest.

    python benchmarks/resnet_similarity.py [--n 2000] [--model-b resnet18] [--train-steps 0]
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
CIFAR = ROOT / ".." / "shared" / "data" / "cifar10" / "train_exact.npz"
DEPTHS = (0.25, 0.5, 1.0)
METRICS = ("inputs_only", "cka_biased", "cka_debiased", "cka_minibatch", "rbf_cka", "procrustes", "svcca",
           "pwcca", "flat_map", "conv_map", "conv_trained_stitch")
CONV_ONLY = ("conv_map", "conv_trained_stitch")
MAX_FLAT_MAP_GIB = 4.0  # a 65,536 x 65,536 map (depth 0.25) would be 16 GiB: the conv map is the one used there


def peak_rss_gib() -> float:
    """Peak resident memory of this process so far: VmHWM, which starts afresh at exec (ru_maxrss
    does not: a worker would report its parent's peak at fork time)."""
    for line in pathlib.Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 2 ** 20  # kB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20


def build_nets(args: argparse.Namespace):
    """[(model, variables)] for A and B: deterministic from the seeds, so workers rebuild them."""
    import jax
    import jax.numpy as jnp

    from anatomy_jax.models.registry import create_model

    nets = []
    for name, seed in ((args.model_a, 0), (args.model_b, 1)):
        model = create_model(name, num_classes=10, width=1.0)
        variables = model.init(jax.random.key(seed), jnp.zeros((1, 32, 32, 3)))
        nets.append((model, variables))
    return nets


def train_nets(nets, images: np.ndarray, labels: np.ndarray, steps: int):
    """Each net trained for `steps` SGD steps (batch 128, lr 0.05, momentum 0.9) in train mode."""
    if steps == 0:
        return nets
    import jax
    import jax.numpy as jnp
    import optax

    trained = []
    for k, (model, variables) in enumerate(nets):
        tx = optax.sgd(0.05, momentum=0.9)
        params, rest = variables["params"], {c: v for c, v in variables.items() if c != "params"}
        state = (params, rest, tx.init(params))

        @jax.jit
        def step(state, x, y, model=model, tx=tx):
            params, rest, opt = state

            def loss_fn(p):
                logits, updates = model.apply({"params": p, **rest}, x, train=True, mutable=list(rest))
                return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), updates

            (_, updates), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
            delta, opt = tx.update(grads, opt, params)
            return optax.apply_updates(params, delta), {**rest, **updates}, opt

        rng = np.random.default_rng(k)
        for _ in range(steps):
            idx = rng.choice(len(images), 128, replace=False)
            state = step(state, jnp.asarray(images[idx], jnp.float32) / 255.0, jnp.asarray(labels[idx]))
        trained.append((model, {"params": state[0], **state[1]}))
    return trained


def extract(args: argparse.Namespace, workdir: pathlib.Path) -> dict:
    """Representations of both nets at every depth, saved as .npy for the workers."""
    from flax import serialization

    from anatomy_jax.experiment.compare_representations import layer_at_depth
    from anatomy_jax.similarity import representation_shape, representations

    with np.load(CIFAR, allow_pickle=False) as data:
        images, labels = data["x"][:args.n], data["y"][:args.n].astype(np.int32)
    if len(images) < args.n:
        raise SystemExit(f"--n {args.n}: the pixel-exact subset has {len(images)} images")
    start = time.perf_counter()
    nets = train_nets(build_nets(args), images, labels, args.train_steps)
    train_s = time.perf_counter() - start
    info = {"n": args.n, "models": [args.model_a, args.model_b], "train_steps": args.train_steps,
            "train_s": round(train_s, 1), "depths": {}}
    np.save(workdir / "labels.npy", labels)
    for k, (_, variables) in enumerate(nets):
        (workdir / f"variables{k}.msgpack").write_bytes(serialization.to_bytes(variables))
    start = time.perf_counter()
    for depth in DEPTHS:
        entry = {}
        for k, (model, variables) in enumerate(nets):
            layer = layer_at_depth(model.layer_names, depth)
            rep = representations(model, variables, images, [layer], batch_size=250)[layer]
            np.save(workdir / f"rep_{depth}_{k}.npy", rep)
            entry[f"layer_{'ab'[k]}"] = layer
            entry[f"shape_{'ab'[k]}"] = list(representation_shape(model, variables, (32, 32, 3), layer))
        info["depths"][str(depth)] = entry
    info["extract_s"] = round(time.perf_counter() - start, 1)
    (workdir / "info.json").write_text(json.dumps(info))
    return info


def run_metric(args: argparse.Namespace, workdir: pathlib.Path, metric: str, depth: float) -> dict:
    """One metric at one depth in this process; returns its value(s), seconds and peak RSS."""
    import jax
    import jax.numpy as jnp
    from flax import serialization

    from anatomy_jax.similarity import (fit_conv_map, fit_ridge_cv, linear_cka, minibatch_linear_cka, procrustes_distance,
                                        pwcca, r2_score, rbf_cka, stitched_accuracy, svcca, train_stitch)

    info = json.loads((workdir / "info.json").read_text())["depths"][str(depth)]
    x = np.load(workdir / f"rep_{depth}_0.npy")
    y = np.load(workdir / f"rep_{depth}_1.npy")
    labels = np.load(workdir / "labels.npy")
    n = len(x)
    cut = int(0.8 * n)
    dims = n // 10
    out: dict = {"p": x.shape[1], "q": y.shape[1]}
    start = time.perf_counter()

    def model_b():
        model, template = build_nets(args)[1]
        return model, serialization.from_bytes(template, (workdir / "variables1.msgpack").read_bytes())

    if metric == "cka_biased":
        out["value"] = float(linear_cka(x, y))
    elif metric == "cka_debiased":
        out["value"] = float(linear_cka(x, y, debiased=True))
    elif metric == "cka_minibatch":
        out["value"] = float(minibatch_linear_cka(x, y, batch_size=500, key=jax.random.key(0)))
    elif metric == "rbf_cka":
        out["value"] = float(rbf_cka(x, y))
    elif metric == "procrustes":
        out["value"] = float(procrustes_distance(x, y))
    elif metric == "svcca":
        out["value"], out["dims"] = float(svcca(x, y, dims=min(dims, x.shape[1], y.shape[1]))), dims
    elif metric == "pwcca":
        out["value"], out["dims"] = float(pwcca(x, y, dims=min(dims, x.shape[1], y.shape[1]))), dims
    elif metric == "flat_map":
        fit = int(0.8 * cut)  # ridge chosen on the last fifth of the fit images
        w, c, ridge, _ = fit_ridge_cv(x[:fit], y[:fit], x[fit:cut], y[fit:cut])
        out["map_gib"] = round(w.size * 4 / 2 ** 30, 2)
        out["r2"] = float(r2_score(jnp.asarray(y[cut:]), jnp.asarray(x[cut:]) @ w + c))
        model, variables = model_b()
        out["stitched_accuracy"] = stitched_accuracy(model, variables, info["layer_b"], x[cut:], w, c,
                                                     tuple(info["shape_b"]), labels[cut:])
    elif metric in CONV_ONLY:
        h_a = x.reshape(n, *info["shape_a"])
        w, c = fit_conv_map(h_a[:cut], y[:cut].reshape(cut, *info["shape_b"]))
        model, variables = model_b()
        shape_b = tuple(info["shape_b"])
        out["least_squares_stitched_accuracy"] = stitched_accuracy(model, variables, info["layer_b"], h_a[cut:], w, c,
                                                                   shape_b, labels[cut:], conv=True)
        if metric == "conv_trained_stitch":
            w, c = train_stitch(model, variables, info["layer_b"], h_a[:cut], w, c, shape_b, labels[:cut],
                                key=jax.random.key(0), steps=args.stitch_steps, conv=True)
            out["stitch_steps"] = args.stitch_steps
            out["trained_stitched_accuracy"] = stitched_accuracy(model, variables, info["layer_b"], h_a[cut:], w, c,
                                                                 shape_b, labels[cut:], conv=True)
    elif metric != "inputs_only":
        raise ValueError(f"unknown metric {metric!r}")
    out["seconds"] = round(time.perf_counter() - start, 2)
    out["peak_rss_gib"] = round(peak_rss_gib(), 2)
    return out


def table(results: dict, info: dict) -> str:
    depths = [d for d in DEPTHS if str(d) in results]
    p = {d: int(np.prod(info["depths"][str(d)]["shape_a"])) for d in depths}
    lines = ["| metric | " + " | ".join(f"depth {d} ({info['depths'][str(d)]['layer_a']}, p = {p[d]:,})"
                                       for d in depths) + " |",
             "|---|" + "---|" * len(depths)]
    for metric in METRICS:
        cells = []
        for d in depths:
            r = results[str(d)].get(metric)
            if r is None:
                cells.append("n/a")
            elif "error" in r:
                cells.append("failed")
            elif "skipped" in r:
                cells.append(r["skipped"])
            else:
                cells.append(f"{r['seconds']:.1f} s, {r['peak_rss_gib']:.2f} GiB")
        lines.append(f"| {metric} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=2000, help="CIFAR-10 images (at most 5,085)")
    parser.add_argument("--model-a", default="resnet18")
    parser.add_argument("--model-b", default="resnet18", help="resnet18 (seed 1) or another registry model")
    parser.add_argument("--train-steps", type=int, default=0, help="SGD steps per net before comparing (0 = init)")
    parser.add_argument("--stitch-steps", type=int, default=20, help="train_stitch steps for conv_trained_stitch")
    parser.add_argument("--metrics", nargs="*", default=list(METRICS), choices=METRICS)
    parser.add_argument("--depths", nargs="*", type=float, default=list(DEPTHS), choices=DEPTHS)
    parser.add_argument("--out", type=pathlib.Path, default=None, help="write the results JSON here")
    parser.add_argument("--worker", nargs=3, metavar=("WORKDIR", "METRIC", "DEPTH"), help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        workdir, metric, depth = args.worker
        print(json.dumps(run_metric(args, pathlib.Path(workdir), metric, float(depth))))
        return

    with tempfile.TemporaryDirectory(prefix="resnet_similarity_") as tmp:
        workdir = pathlib.Path(tmp)
        info = extract(args, workdir)
        print(f"extracted in {info['extract_s']} s: " + json.dumps(info["depths"]), flush=True)
        results: dict = {}
        for depth in args.depths:
            results[str(depth)] = {}
            for metric in args.metrics:
                shapes = info["depths"][str(depth)]
                if metric in CONV_ONLY and len(shapes["shape_a"]) != 3:
                    continue
                map_gib = np.prod(shapes["shape_a"]) * np.prod(shapes["shape_b"]) * 4 / 2 ** 30
                if metric == "flat_map" and map_gib > MAX_FLAT_MAP_GIB:
                    results[str(depth)][metric] = {"skipped": f"a flattened map would take {map_gib:.0f} GiB"}
                    print(f"depth {depth} {metric}: skipped ({map_gib:.0f} GiB map)", flush=True)
                    continue
                command = [sys.executable, __file__, "--worker", str(workdir), metric, str(depth),
                           "--model-a", args.model_a, "--model-b", args.model_b,
                           "--stitch-steps", str(args.stitch_steps)]
                done = subprocess.run(command, capture_output=True, text=True, env=os.environ)
                if done.returncode:
                    results[str(depth)][metric] = {"error": done.stderr.strip().splitlines()[-1:]}
                else:
                    results[str(depth)][metric] = json.loads(done.stdout.strip().splitlines()[-1])
                print(f"depth {depth} {metric}: {json.dumps(results[str(depth)][metric])}", flush=True)
    summary = {"info": info, "results": results}
    if args.out:
        args.out.write_text(json.dumps(summary, indent=1))
    print(table(results, info))


if __name__ == "__main__":
    main()
