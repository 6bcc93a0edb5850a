"""RWC per layer group and the papers' claims about it (Agrawal et al., arXiv 2011.06735).

The paper reports RWC per group of layers: ResNet-18 by block (block1..block4, shortcut convs in
their block), VGG-19-BN and AlexNet as early / middle / late conv layers. `group_rwc` averages a
(seeds x) layers x epochs RWC array over each group's layers and the seeds; `rwc_claims` checks
the paper's qualitative claims against per-group means over the epochs after the first (the first
epoch compares against the random initialisation and dwarfs the rest).
"""

from __future__ import annotations

import contextlib
import warnings
from typing import Any, Sequence

import numpy as np

# Datasets the paper calls simple (its "simple tasks"); digits stands in for MNIST.
SIMPLE_DATASETS = ("mnist", "fashion_mnist", "cifar10", "digits")
HARD_DATASETS = ("cifar100",)


def _per_seed(rwc: np.ndarray) -> np.ndarray:
    rwc = np.asarray(rwc, dtype=float)
    if rwc.ndim == 2:
        rwc = rwc[None]
    if rwc.ndim != 3:
        raise ValueError(f"expected a (seeds x) layers x epochs array, got shape {rwc.shape}")
    return np.where(np.isfinite(rwc), rwc, np.nan)  # inf (an all-zero layer that changed) is not averaged


def _rows(groups: Sequence[str], n: int) -> dict[str, list[int]]:
    if len(groups) != n:
        raise ValueError(f"{len(groups)} group names for {n} layers")
    rows: dict[str, list[int]] = {}
    for i, g in enumerate(groups):
        rows.setdefault(g, []).append(i)
    return rows


def group_rwc(rwc: np.ndarray, groups: Sequence[str]) -> dict[str, np.ndarray]:
    """{group: (epochs,) mean RWC over the group's layers and the seeds}, groups in first-seen order.

    `rwc` is (layers, epochs) or (seeds, layers, epochs); NaN (epochs after a run stopped) and inf
    entries are left out of the means; an epoch with no finite value is NaN."""
    r = _per_seed(rwc)
    out = {}
    for g, rows in _rows(groups, r.shape[1]).items():
        values = r[:, rows, :].reshape(-1, r.shape[2])
        with _quiet():
            out[g] = np.nanmean(values, axis=0)
    return out


def group_rwc_per_seed(rwc: np.ndarray, groups: Sequence[str]) -> dict[str, np.ndarray]:
    """{group: (seeds, epochs) mean RWC over the group's layers, per seed}."""
    r = _per_seed(rwc)
    out = {}
    for g, rows in _rows(groups, r.shape[1]).items():
        with _quiet():
            out[g] = np.nanmean(r[:, rows, :], axis=1)
    return out


def group_rwc_std(rwc: np.ndarray, groups: Sequence[str]) -> dict[str, np.ndarray]:
    """{group: (epochs,) standard deviation over the seeds of the per-seed group means}."""
    with _quiet():
        return {g: np.nanstd(v, axis=0) for g, v in group_rwc_per_seed(rwc, groups).items()}


def after_first(curves: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """{group: mean over the epochs after the first} of per-epoch curves ((epochs,) -> scalar,
    (seeds, epochs) -> (seeds,)); NaN where no later epoch was recorded."""
    with _quiet():
        return {g: np.nanmean(np.asarray(c, float)[..., 1:], axis=-1) for g, c in curves.items()}


@contextlib.contextmanager
def _quiet():
    """Silences numpy's 'mean of empty slice' warnings (the NaN result is the answer)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


def _claim(text: str, values: dict[str, Any], test, per_seed: dict[str, np.ndarray]) -> dict[str, Any]:
    keys = list(values)
    mean = [values[k] for k in keys]
    holds = None if any(not np.isfinite(v) for v in mean) else bool(test(*mean))
    seeds = np.stack([np.asarray(per_seed[k], float) for k in keys], axis=-1)  # (seeds, len(keys))
    decided = [bool(test(*row)) for row in seeds if np.isfinite(row).all()]
    return {"claim": text, "holds": holds, "values": {k: (float(v) if np.isfinite(v) else None)
                                                      for k, v in values.items()},
            "seeds_holding": int(sum(decided)), "seeds": len(decided)}


def rwc_claims(rwc: np.ndarray, groups: Sequence[str], dataset: str) -> list[dict[str, Any]]:
    """The papers' claims about a model's per-group RWC, checked on the mean over the epochs after
    the first (and over the seeds; `seeds_holding` counts the seeds on which a claim holds alone).

    ResNet-style groups (block1..blockN): the last block changes more than block1; block1 < block2
    < block3; on simple tasks (MNIST, Fashion-MNIST, CIFAR-10, digits) block4 <= block3, on
    CIFAR-100 block4 > block3. early/middle/late groups (VGG, AlexNet): late > early; on simple
    tasks late <= middle, on CIFAR-100 late > middle. Each claim: text, `holds` (None when a value
    is missing), the values compared, `seeds_holding` of `seeds`."""
    per_seed = after_first(group_rwc_per_seed(rwc, groups))
    mean = after_first(group_rwc(rwc, groups))
    claims = []
    blocks = sorted((g for g in mean if g.startswith("block") and g[5:].isdigit()), key=lambda g: int(g[5:]))
    name = dataset.split(":", 1)[0]
    if len(blocks) >= 2:
        first, last = blocks[0], blocks[-1]
        claims.append(_claim(f"later layers change more: {last} > {first}", {last: mean[last], first: mean[first]},
                             lambda a, b: a > b, per_seed))
    if len(blocks) >= 3:
        claims.append(_claim("block1 < block2 < block3", {b: mean[b] for b in blocks[:3]},
                             lambda a, b, c: a < b < c, per_seed))
    if len(blocks) >= 4:
        if name in SIMPLE_DATASETS:
            claims.append(_claim("simple task: block4 <= block3", {"block4": mean["block4"], "block3": mean["block3"]},
                                 lambda a, b: a <= b, per_seed))
        elif name in HARD_DATASETS:
            claims.append(_claim("CIFAR-100: block4 > block3", {"block4": mean["block4"], "block3": mean["block3"]},
                                 lambda a, b: a > b, per_seed))
    if {"early", "middle"} <= set(mean) and "late" not in mean:  # e.g. VGG-11: 8 convs, none from the 12th on
        claims.append({"claim": "later layers change more: late > early", "holds": None, "values": {},
                       "seeds_holding": 0, "seeds": 0,
                       "reason": "no late group: the model has fewer convolutions than the paper's late group "
                                 "starts at (the 12th)"})
    if {"early", "late"} <= set(mean):
        claims.append(_claim("later layers change more: late > early", {"late": mean["late"], "early": mean["early"]},
                             lambda a, b: a > b, per_seed))
        if "middle" in mean and name in SIMPLE_DATASETS:
            claims.append(_claim("simple task: late <= middle", {"late": mean["late"], "middle": mean["middle"]},
                                 lambda a, b: a <= b, per_seed))
        elif "middle" in mean and name in HARD_DATASETS:
            claims.append(_claim("CIFAR-100: late > middle", {"late": mean["late"], "middle": mean["middle"]},
                                 lambda a, b: a > b, per_seed))
    return claims
