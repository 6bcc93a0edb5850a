#!/usr/bin/env python
"""Similarity indices at the width of a flattened conv map: time, peak memory and float32 error.

At relative depth 0.5 of a full-width ResNet-18 on 32x32 inputs a flattened representation has
p = 32,768 features. This script builds two correlated float32 representations of that width with
a large common offset, x = relu(g) + 20 and y = relu(g[:, perm] * scale + noise) + 20 (g = gaussian
plus a shared rank-64 part; no p x q matrix is ever formed), then times debiased linear CKA and
the Procrustes distance together (compilation included), reads the peak resident memory of the
process (resource.getrusage ru_maxrss, inputs included), and compares both with a float64 numpy
reference computed afterwards from n x n Gram matrices of the centred data (accumulated over
column chunks, so the reference does not raise the peak reported for the metrics).
`--all-metrics` also times biased and minibatch CKA, RBF CKA, SVCCA and PWCCA (dims = n // 10).

    python benchmarks/similarity_scale.py [--n 2000] [--p 32768] [--q 32768] [--all-metrics]

Acceptance (issue, seed 001): CKA + Procrustes <= 300 s on 2 CPU cores, peak RSS <= 12 GiB,
|CKA - float64 reference| <= 2e-3.
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import jax
import numpy as np

from anatomy_jax.similarity import (linear_cka, minibatch_linear_cka, procrustes_distance, pwcca, rbf_cka,
                                    svcca)

OFFSET = 20.0


def make_inputs(n: int, p: int, q: int, seed: int) -> tuple[jax.Array, jax.Array]:
    """Two related (n x p) and (n x q) float32 ReLU representations, both offset by +20."""
    if q > p:
        raise ValueError(f"q must be <= p, got p={p}, q={q}")
    k = jax.random.split(jax.random.key(seed), 6)

    @jax.jit
    def build(k):
        g = jax.random.normal(k[0], (n, p)) + jax.random.normal(k[1], (n, 64)) @ jax.random.normal(k[2], (64, p)) / 4
        perm = jax.random.permutation(k[3], p)[:q]
        scale = jax.random.uniform(k[4], (q,), minval=0.5, maxval=2.0)
        x = jax.nn.relu(g) + OFFSET
        y = jax.nn.relu(g[:, perm] * scale + 4.0 * jax.random.normal(k[5], (n, q))) + OFFSET
        return x, y

    return jax.block_until_ready(build(k))


def peak_rss_gib() -> float:
    """Peak resident memory of this process so far (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20


def timed(fn, *args, **kwargs) -> tuple[float, float]:
    start = time.perf_counter()
    value = float(jax.block_until_ready(fn(*args, **kwargs)))
    return value, time.perf_counter() - start


def reference_grams(a: np.ndarray, chunk: int = 2048) -> np.ndarray:
    """The float64 n x n Gram matrix of the centred a, accumulated over column chunks."""
    mean = a.mean(axis=0, dtype=np.float64)
    gram = np.zeros((a.shape[0], a.shape[0]))
    for j in range(0, a.shape[1], chunk):
        c = a[:, j:j + chunk].astype(np.float64) - mean[j:j + chunk]
        gram += c @ c.T
    return gram


def numpy_hsic(k: np.ndarray, l: np.ndarray, debiased: bool) -> float:
    """Biased tr(K H L H) / (n-1)^2 or Song et al.'s unbiased estimator, in float64."""
    n = k.shape[0]
    if not debiased:
        h = np.eye(n) - 1.0 / n
        return float(np.sum((h @ k @ h) * (h @ l @ h)) / (n - 1) ** 2)
    kt, lt = k - np.diag(np.diag(k)), l - np.diag(np.diag(l))
    kr, lr = kt.sum(1), lt.sum(1)
    return float((np.sum(kt * lt) + kr.sum() * lr.sum() / ((n - 1) * (n - 2)) - 2 / (n - 2) * kr @ lr)
                 / (n * (n - 3)))


def numpy_procrustes(k: np.ndarray, l: np.ndarray) -> float:
    """2 - 2 ||x^T y||_* / (||x|| ||y||) from Gram matrices: the squared singular values of x^T y
    are the eigenvalues of K^1/2 L K^1/2."""
    lam, u = np.linalg.eigh(k)
    root = (u * np.sqrt(np.clip(lam, 0, None))) @ u.T
    nuclear = np.sqrt(np.clip(np.linalg.eigvalsh(root @ l @ root), 0, None)).sum()
    return float(2 - 2 * nuclear / np.sqrt(np.trace(k) * np.trace(l)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=2000, help="examples")
    parser.add_argument("--p", type=int, default=32768, help="features of x")
    parser.add_argument("--q", type=int, default=32768, help="features of y (<= p)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--all-metrics", action="store_true", help="also time the other indices")
    args = parser.parse_args()

    x, y = make_inputs(args.n, args.p, args.q, args.seed)
    inputs_gib = (x.nbytes + y.nbytes) / 2 ** 30
    cka, t_cka = timed(linear_cka, x, y, debiased=True)
    dist, t_proc = timed(procrustes_distance, x, y)
    peak = peak_rss_gib()
    out = {"n": args.n, "p": args.p, "q": args.q, "inputs_gib": round(inputs_gib, 3),
           "debiased_cka": cka, "debiased_cka_s": round(t_cka, 2), "procrustes": dist,
           "procrustes_s": round(t_proc, 2), "cka_plus_procrustes_s": round(t_cka + t_proc, 2),
           "peak_rss_gib": round(peak, 3), "devices": str(jax.devices())}
    if args.all_metrics:
        d = args.n // 10
        for name, fn, kwargs in (("biased_cka", linear_cka, {}),
                                 ("minibatch_cka", minibatch_linear_cka,
                                  dict(batch_size=min(500, args.n), key=jax.random.key(0))),
                                 ("rbf_cka", rbf_cka, {}),
                                 (f"svcca_dims{d}", svcca, dict(dims=d)),
                                 (f"pwcca_dims{d}", pwcca, dict(dims=d))):
            out[name], seconds = timed(fn, x, y, **kwargs)
            out[f"{name}_s"] = round(seconds, 2)
        out["peak_rss_all_metrics_gib"] = round(peak_rss_gib(), 3)

    start = time.perf_counter()
    xn, yn = np.asarray(x), np.asarray(y)
    k, l = reference_grams(xn), reference_grams(yn)
    ref_cka = numpy_hsic(k, l, True) / np.sqrt(numpy_hsic(k, k, True) * numpy_hsic(l, l, True))
    out.update(reference_cka=ref_cka, cka_error=abs(cka - ref_cka), reference_procrustes=numpy_procrustes(k, l),
               reference_s=round(time.perf_counter() - start, 2))
    out["procrustes_error"] = abs(dist - out["reference_procrustes"])
    if args.all_metrics:
        ref_biased = numpy_hsic(k, l, False) / np.sqrt(numpy_hsic(k, k, False) * numpy_hsic(l, l, False))
        out.update(reference_biased_cka=ref_biased, biased_cka_error=abs(out["biased_cka"] - ref_biased))
    out["pass"] = bool(t_cka + t_proc <= 300 and peak <= 12 and out["cka_error"] <= 2e-3)
    print(json.dumps(out))
    print(f"debiased CKA {cka:.6f} (float64 {ref_cka:.6f}, error {out['cka_error']:.2e}) in {t_cka:.1f} s; "
          f"Procrustes {dist:.6f} (float64 {out['reference_procrustes']:.6f}) in {t_proc:.1f} s; "
          f"together {t_cka + t_proc:.1f} s (limit 300); peak RSS {peak:.2f} GiB (limit 12, inputs "
          f"{inputs_gib:.2f}); {'PASS' if out['pass'] else 'FAIL'}")


if __name__ == "__main__":
    main()
