"""experiments/gradient_alignment.py end to end with tiny settings."""

import json

import numpy as np
import pytest
import subprocess
import sys

from tests.conftest import ROOT

SCRIPT = str(ROOT / "experiments" / "gradient_alignment.py")


def _ranks(values):
    """Ranks with ties given their average rank (as Spearman's rho defines them)."""
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values))
    ranks[order] = np.arange(len(values), dtype=float)
    for v in np.unique(values):
        ranks[values == v] = ranks[values == v].mean()
    return ranks


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
    # the predictor values are the runs' probe records at the early step, and rho is their Spearman
    # correlation with the acquisition steps (never acquired = steps + 1), recomputed here from ranks
    for predictor in predictors:
        group = results["group_names"].index(predictor["group"])
        records = [next(p for p in r["probes"] if p["step"] == 10) for r in results["runs"]]
        assert predictor["values"] == pytest.approx([rec[predictor["statistic"]][group] for rec in records])
        acquisition = [r["acquisition_step"] if r["acquisition_step"] is not None else 41 for r in results["runs"]]
        assert predictor["acquisition_steps"] == acquisition
        x, y = np.asarray(predictor["values"]), np.asarray(acquisition, float)
        if len(set(x.tolist())) < 2 or len(set(y.tolist())) < 2:
            assert predictor["spearman"] is None
        else:
            assert predictor["spearman"] == pytest.approx(np.corrcoef(_ranks(x), _ranks(y))[0, 1], abs=1e-9)
    assert "Spearman" in result.stdout and results["verdict"] in result.stdout
    bad = subprocess.run([sys.executable, SCRIPT, "--early-step", "15", "--eval-every", "10", "--out",
                          str(tmp_path / "b")], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert bad.returncode == 2 and "early_step must be an evaluation step" in bad.stderr
