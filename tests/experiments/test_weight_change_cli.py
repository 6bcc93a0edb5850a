"""experiments/weight_change.py end to end with tiny settings."""

import json

import numpy as np
import pytest
import subprocess
import sys

from tests.conftest import ROOT

SCRIPT = str(ROOT / "experiments" / "weight_change.py")


def test_tiny_weight_change_run_writes_results_and_figures(tmp_path):
    out = tmp_path / "wc"
    args = [sys.executable, SCRIPT, "--models", "cnn,vgg11", "--epochs", "3", "--seeds", "0", "--max-k", "4",
            "--out", str(out)]
    result = subprocess.run(args, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-2000:]
    for name in ("rwc_per_layer.png", "rwc_by_depth.png", "scree.png", "clusters.png"):
        assert (out / name).stat().st_size > 5_000, name
    results = json.loads((out / "results.json").read_text())
    vgg = results["models"]["vgg11"]
    assert vgg["layers"][0].startswith("block1/") and vgg["layers"][-1].startswith("logits/")
    assert len(vgg["layers"]) == 9  # 8 conv kernels + the classifier, in depth order
    assert all(len(row) == 3 and all(v > 0 for v in row) for row in vgg["mean_rwc"])
    clusters = vgg["clusters"]
    matrix, labels, k, sse = (np.asarray(clusters["matrix"]), np.asarray(clusters["labels"]), clusters["k"],
                              np.asarray(clusters["sse"]))
    assert len(labels) == 9 and len(set(labels.tolist())) == k and clusters["ks"] == [1, 2, 3, 4]
    # the reported SSE at k is that of the reported partition (recomputed from the cleaned matrix)
    partition_sse = sum(((matrix[labels == c] - matrix[labels == c].mean(0)) ** 2).sum() for c in set(labels))
    assert partition_sse == pytest.approx(sse[k - 1], rel=1e-6)
    assert sse[0] == pytest.approx(((matrix - matrix.mean(0)) ** 2).sum(), rel=1e-6)
    # k is the elbow: the SSE point farthest below the chord from k = 1 to k = 4
    x = np.linspace(0, 1, len(sse))
    below = (1 - x) - (sse - sse[-1]) / (sse[0] - sse[-1])
    assert k == int(np.argmax(below)) + 1
    again = subprocess.run(args, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert again.returncode == 2 and "already holds results" in again.stderr
    bad = subprocess.run([sys.executable, SCRIPT, "--models", "cnn,transformer", "--out", str(tmp_path / "b")],
                         capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert bad.returncode == 2 and "unknown model" in bad.stderr and "Traceback" not in bad.stderr
