"""experiments/gradient_alignment.py end to end with tiny settings."""

import json
import subprocess
import sys

from tests.conftest import ROOT

SCRIPT = str(ROOT / "experiments" / "gradient_alignment.py")


def test_tiny_gradient_alignment_run(tmp_path):
    out = tmp_path / "ga"
    args = [sys.executable, SCRIPT, "--frequencies", "0.01,0.03,0.1", "--correlations", "1", "--learning-rates",
            "0.05", "--steps", "40", "--eval-every", "10", "--early-step", "10", "--probe-size", "32",
            "--chunk-size", "16", "--batch-size", "64", "--out", str(out)]
    result = subprocess.run(args, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-2000:]
    for name in ("alignment_over_time.png", "alignment_vs_acquisition.png"):
        assert (out / name).stat().st_size > 10_000
    results = json.loads((out / "results.json").read_text())
    assert len(results["runs"]) == 3
    for run in results["runs"]:
        assert [p["step"] for p in run["probes"]] == [10, 20, 30, 40]
        for p in run["probes"]:
            assert abs(sum(p["projection_share"]) - 1.0) < 1e-3
    predictors = results["analysis"]["predictors"]
    assert predictors[0]["statistic"] == "projection_share" and len(predictors[0]["values"]) == 3
    rho = predictors[0]["spearman"]
    assert rho is None or -1.0 <= rho <= 1.0
    assert "Spearman" in result.stdout and results["verdict"] in result.stdout
    bad = subprocess.run([sys.executable, SCRIPT, "--early-step", "15", "--eval-every", "10", "--out",
                          str(tmp_path / "b")], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert bad.returncode == 2 and "early_step must be an evaluation step" in bad.stderr
