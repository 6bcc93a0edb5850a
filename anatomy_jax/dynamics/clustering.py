"""Aggregating layer trajectories by PCA + k-means (WeightScale, arXiv 2107.07005).

Input: a layers x epochs matrix of RWC values. The defaults are the published ones (the authors'
clustering notebooks), each step optional where the paper makes it so:

1. NaN/inf entries are replaced by the mean of that layer's finite values;
2. the first and last layers are dropped (`drop_first_last`, default on: the stem conv and the
   classifier);
3. entries more than `outlier_std` (2) standard deviations from their layer's mean are replaced by
   that mean. As in the paper this also replaces real peaks (the large epoch-1 change of most
   layers is usually one of them), not only numerical accidents;
4. k-means (k-means++, `n_init` 10, `max_iter` 300, seed 42069) for k = 1..`max_k` (17; fewer only
   when there are fewer layers); the elbow of the SSE curve is the k whose point lies farthest
   below the chord from k = 1 to k = max_k (the "kneedle" rule);
5. PCA of the layers to 2-D for the picture; with `pca_dim`, the same k-means scree and elbow on
   the PCA-reduced layers (the variant that gave the paper's K = 4 on ResNet-50 / CIFAR-100).

`cluster_by_type` runs the whole procedure separately per layer type, as the paper did for
EfficientNet-B4 (depthwise, pointwise, pointwise-linear and squeeze-excite convolutions).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

SEED = 42069  # the numpy seed of the authors' clustering notebooks
MAX_K = 17  # k = 1..17 in the notebooks' scree plots


def clean_matrix(matrix: np.ndarray, outlier_std: float | None = 2.0) -> np.ndarray:
    """Steps 1 and 3: NaN/inf and outliers replaced by the layer (row) mean."""
    m = np.array(matrix, dtype=float)
    if m.ndim != 2:
        raise ValueError(f"expected a layers x epochs matrix, got shape {m.shape}")
    for row in m:
        finite = np.isfinite(row)
        mean = row[finite].mean() if finite.any() else 0.0
        row[~finite] = mean
        if outlier_std is not None:
            std = row.std()
            if std > 0:
                row[np.abs(row - row.mean()) > outlier_std * std] = row.mean()
    return m


def elbow(sse: Sequence[float]) -> int:
    """The k (1-based) at the elbow of a decreasing SSE curve: the point farthest from the chord."""
    sse = np.asarray(sse, dtype=float)
    if len(sse) < 3:
        return len(sse)
    ks = np.arange(1, len(sse) + 1, dtype=float)
    x = (ks - ks[0]) / (ks[-1] - ks[0])
    span = sse[0] - sse[-1]
    y = (sse - sse[-1]) / span if span > 0 else np.zeros_like(sse)
    # Distance below the straight line from (0, 1) to (1, 0): larger means a sharper bend.
    return int(ks[np.argmax((1.0 - x) - y)])


def _scree(points: np.ndarray, max_k: int, n_init: int, max_iter: int, seed: int) -> tuple[list[int], list, list]:
    from sklearn.cluster import KMeans

    ks = list(range(1, min(max_k, points.shape[0]) + 1))
    fits = [KMeans(k, init="k-means++", n_init=n_init, max_iter=max_iter, random_state=seed).fit(points) for k in ks]
    return ks, fits, [float(f.inertia_) for f in fits]


def cluster_layers(matrix: np.ndarray, names: Sequence[str] | None = None, *, max_k: int = MAX_K,
                   drop_first_last: bool = True, outlier_std: float | None = 2.0, n_init: int = 10,
                   max_iter: int = 300, seed: int = SEED, pca_dim: int | None = None) -> dict[str, Any]:
    """Clusters the rows (layers) of a layers x epochs RWC matrix; returns a JSON-ready dict:
    names, cleaned matrix, SSE per k, the elbow k, labels at that k and the 2-D PCA coordinates
    with their explained variance ratio.

    With `pca_dim`, k-means runs on the layers reduced to their first `pca_dim` principal
    components instead of the cleaned matrix (then `pca_dim` is in the dict, and `pca` holds the
    first two of those coordinates)."""
    from sklearn.decomposition import PCA

    m = np.asarray(matrix, dtype=float)
    if m.ndim != 2:
        raise ValueError(f"expected a layers x epochs matrix, got shape {m.shape}")
    names = list(names) if names is not None else [str(i) for i in range(m.shape[0])]
    if len(names) != m.shape[0]:
        raise ValueError(f"{len(names)} names for {m.shape[0]} layers")
    if max_k < 1:
        raise ValueError(f"max_k must be >= 1, got {max_k}")
    if pca_dim is not None and pca_dim < 1:
        raise ValueError(f"pca_dim must be >= 1 (or None for no reduction), got {pca_dim}")
    if drop_first_last:
        m, names = m[1:-1], names[1:-1]
    if m.shape[0] < 2:
        raise ValueError(f"need at least 2 layers to cluster, got {m.shape[0]}")
    m = clean_matrix(m, outlier_std)
    n_components = min(max(2, pca_dim or 0), m.shape[0], m.shape[1])
    pca = PCA(n_components=n_components, random_state=seed).fit(m)
    coords = pca.transform(m)
    points = m
    if pca_dim is not None:
        points = coords[:, :min(pca_dim, n_components)]
    ks, fits, sse = _scree(points, max_k, n_init, max_iter, seed)
    k = elbow(sse)
    shown = coords[:, :2]
    if shown.shape[1] < 2:
        shown = np.pad(shown, ((0, 0), (0, 2 - shown.shape[1])))
    out = {"names": names, "matrix": m.tolist(), "ks": ks, "sse": sse, "k": k,
           "labels": fits[k - 1].labels_.astype(int).tolist(), "pca": shown.tolist(),
           "explained_variance_ratio": pca.explained_variance_ratio_[:2].tolist()}
    if pca_dim is not None:
        out["pca_dim"] = int(points.shape[1])
    return out


def cluster_by_type(matrix: np.ndarray, names: Sequence[str], types: Sequence[str],
                    clustered_types: Sequence[str] | None = None, **kwargs: Any) -> dict[str, dict[str, Any]]:
    """`cluster_layers` run separately on the layers of each type ({type: clusters}).

    `types` is aligned with `names` (e.g. EfficientNet's `depthwise`, `pointwise`,
    `pointwise_linear`, `squeeze_excite`); `clustered_types` picks the types to cluster (default:
    every type with at least 2 layers). First and last layers are not dropped inside a type unless
    `drop_first_last=True` is passed."""
    m = np.asarray(matrix, dtype=float)
    names, types = list(names), list(types)
    if not (len(names) == len(types) == m.shape[0]):
        raise ValueError(f"{len(names)} names and {len(types)} types for {m.shape[0]} layers")
    kwargs.setdefault("drop_first_last", False)
    wanted = list(dict.fromkeys(types)) if clustered_types is None else list(clustered_types)
    out = {}
    for t in wanted:
        rows = [i for i, ty in enumerate(types) if ty == t]
        if len(rows) >= 2 + 2 * kwargs["drop_first_last"]:
            out[t] = cluster_layers(m[rows], [names[i] for i in rows], **kwargs)
    return out
