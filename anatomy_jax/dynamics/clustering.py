"""Aggregating layer trajectories by PCA + k-means (WeightScale, arXiv 2107.07005).

Input: a layers x epochs matrix of RWC values. Steps, each optional where the paper makes it so:
1. NaN/inf entries are replaced by the mean of that layer's finite values;
2. the first and last layers may be dropped (`drop_first_last`);
3. entries more than `outlier_std` standard deviations from their layer's mean are replaced by
   that mean;
4. k-means (k-means++, `n_init`, `max_iter`) for k = 1..`max_k`; the elbow of the SSE curve is
   the k whose point lies farthest below the chord from k = 1 to k = max_k (the "kneedle" rule);
5. PCA to 2-D of the layers for the picture.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np


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


def cluster_layers(matrix: np.ndarray, names: Sequence[str] | None = None, *, max_k: int = 10,
                   drop_first_last: bool = False, outlier_std: float | None = 2.0, n_init: int = 10,
                   max_iter: int = 300, seed: int = 0) -> dict[str, Any]:
    """Clusters the rows (layers) of a layers x epochs RWC matrix; returns a JSON-ready dict:
    names, cleaned matrix, SSE per k, the elbow k, labels at that k and the 2-D PCA coordinates
    with their explained variance ratio."""
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA

    m = np.asarray(matrix, dtype=float)
    names = list(names) if names is not None else [str(i) for i in range(m.shape[0])]
    if len(names) != m.shape[0]:
        raise ValueError(f"{len(names)} names for {m.shape[0]} layers")
    if drop_first_last:
        m, names = m[1:-1], names[1:-1]
    if m.shape[0] < 2:
        raise ValueError(f"need at least 2 layers to cluster, got {m.shape[0]}")
    m = clean_matrix(m, outlier_std)
    ks = list(range(1, min(max_k, m.shape[0]) + 1))
    fits = [KMeans(k, init="k-means++", n_init=n_init, max_iter=max_iter, random_state=seed).fit(m) for k in ks]
    sse = [float(f.inertia_) for f in fits]
    k = elbow(sse)
    n_components = min(2, m.shape[0], m.shape[1])
    pca = PCA(n_components=n_components, random_state=seed).fit(m)
    coords = pca.transform(m)
    if n_components < 2:
        coords = np.pad(coords, ((0, 0), (0, 2 - n_components)))
    return {"names": names, "matrix": m.tolist(), "ks": ks, "sse": sse, "k": k,
            "labels": fits[k - 1].labels_.astype(int).tolist(), "pca": coords.tolist(),
            "explained_variance_ratio": pca.explained_variance_ratio_.tolist()}
