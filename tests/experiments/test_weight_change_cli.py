"""experiments/weight_change.py end to end with tiny settings."""

import json

import numpy as np
import pytest
import subprocess
import sys

from tests.conftest import ROOT

SCRIPT = str(ROOT / "experiments" / "weight_change.py")


def test_tiny_weight_change_run_writes_groups_claims_clusters_and_figures(tmp_path):
    out = tmp_path / "wc"
    args = [sys.executable, SCRIPT, "--models", "cnn,resnet18", "--epochs", "3", "--seeds", "0,1", "--max-k", "4",
            "--out", str(out)]
    result = subprocess.run(args, capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-2000:]
    for name in ("rwc_per_layer.png", "rwc_by_group.png", "scree.png", "clusters.png"):
        assert (out / name).stat().st_size > 5_000, name
    results = json.loads((out / "results.json").read_text())
    resnet, cnn = results["models"]["resnet18"], results["models"]["cnn"]
    # Table 1 (digits uses the MNIST row); cnn is not in Table 1
    assert (resnet["learning_rate"], resnet["weight_decay"]) == (0.1, 1e-4)
    assert (cnn["learning_rate"], cnn["weight_decay"]) == (0.05, 5e-4)
    layers, groups = resnet["layers"], resnet["groups"]
    assert len(layers) == len(groups) == 21 and groups[0] == "stem" and groups[-1] == "classifier"
    assert [g for n, g in zip(layers, groups) if "shortcut" in n] == ["block2", "block3", "block4"]
    assert cnn["groups"] == ["early", "middle", "late", "classifier"]
    # group_rwc: the mean over the group's layers and the seeds, recomputed from the runs
    runs = np.stack([np.asarray(r["rwc"], dtype=float) for r in resnet["runs"]])
    assert runs.shape == (2, 21, 3) and (runs > 0).all()
    for group in ("stem", "block1", "block2", "block3", "block4", "classifier"):
        rows = [i for i, g in enumerate(groups) if g == group]
        np.testing.assert_allclose(resnet["group_rwc"][group], runs[:, rows].mean(axis=(0, 1)), rtol=1e-9)
        np.testing.assert_allclose(resnet["group_rwc_std"][group], runs[:, rows].mean(axis=1).std(axis=0), rtol=1e-9)
        assert resnet["group_mean_rwc"][group] == pytest.approx(runs[:, rows, 1:].mean(), rel=1e-9)
    claims = {c["claim"]: c for c in resnet["claims"]}
    assert set(claims) == {"later layers change more: block4 > block1", "block1 < block2 < block3",
                           "simple task: block4 <= block3"}
    b = resnet["group_mean_rwc"]
    assert claims["block1 < block2 < block3"]["holds"] == (b["block1"] < b["block2"] < b["block3"])
    assert "block1 < block2 < block3" in result.stdout and "paper:" in result.stdout
    # WeightScale: first and last layer dropped, both elbows
    clusters, reduced = resnet["clusters"], resnet["clusters_pca"]
    assert clusters["names"] == layers[1:-1] and reduced["names"] == layers[1:-1] and reduced["pca_dim"] == 2
    matrix, labels, k, sse = (np.asarray(clusters["matrix"]), np.asarray(clusters["labels"]), clusters["k"],
                              np.asarray(clusters["sse"]))
    assert len(labels) == 19 and len(set(labels.tolist())) == k and clusters["ks"] == [1, 2, 3, 4]
    # the reported SSE at k is that of the reported partition (recomputed from the cleaned matrix)
    partition_sse = sum(((matrix[labels == c] - matrix[labels == c].mean(0)) ** 2).sum() for c in set(labels))
    assert partition_sse == pytest.approx(sse[k - 1], rel=1e-6)
    assert sse[0] == pytest.approx(((matrix - matrix.mean(0)) ** 2).sum(), rel=1e-6)
    # k is the elbow: the SSE point farthest below the chord from k = 1 to k = 4
    x = np.linspace(0, 1, len(sse))
    below = (1 - x) - (sse - sse[-1]) / (sse[0] - sse[-1])
    assert k == int(np.argmax(below)) + 1
    # both RWC definitions of the same runs
    assert set(resnet["runs"][0]["rwc_by_mode"]) == {"l1_ratio", "elementwise"}
    assert resnet["runs"][0]["rwc_by_mode"]["l1_ratio"] == resnet["runs"][0]["rwc"]
    again = subprocess.run(args, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert again.returncode == 2 and "already holds results" in again.stderr
    bad = subprocess.run([sys.executable, SCRIPT, "--models", "cnn,transformer", "--out", str(tmp_path / "b")],
                         capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert bad.returncode == 2 and "unknown model" in bad.stderr and "Traceback" not in bad.stderr
    preset = subprocess.run([sys.executable, SCRIPT, "--preset", "papers", "--out", str(tmp_path / "c")],
                            capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert preset.returncode == 2 and "unknown preset" in preset.stderr and "Traceback" not in preset.stderr
