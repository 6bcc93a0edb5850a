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
            "0.05", "--seeds", "0", "--steps", "40", "--eval-every", "10", "--early-step", "10", "--probe-size", "32",
            "--chunk-size", "16", "--batch-size", "64", "--permutations", "200", "--out", str(out)]
    result = subprocess.run(args, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-2000:]
    for name in ("alignment_over_time.png", "alignment_vs_acquisition.png"):
        assert (out / name).stat().st_size > 10_000
    results = json.loads((out / "results.json").read_text())
    assert len(results["runs"]) == 3
    for run in results["runs"]:
        assert [p["step"] for p in run["probes"]] == [10, 20, 30, 40]
        pattern = run["patterns"][0]
        for p in run["probes"]:
            assert abs(sum(p["projection_share"]) - 1.0) < 1e-3
            # the probe batch is weighted to the training set's real composition: the patterned
            # target-labelled group weighs its realised share of the training images
            assert sum(p["weight"]) == pytest.approx(1.0, abs=1e-5)
            assert p["weight"][1] == pytest.approx(pattern["realised_frequency"] * pattern["realised_correlation"],
                                                   rel=1e-4)
            assert 0.0 <= p["coherence"][1] <= 1.0 + 1e-6 and set(p["layers"]) == {"conv1/Conv_0", "logits/Dense_0"}
    analysis = results["analysis"]
    predictors = analysis["predictors"]
    assert predictors[0]["statistic"] == "projection_share" and len(predictors[0]["values"]) == 3
    assert analysis["runs"] == 3 and analysis["controls"] == ["log_frequency"]  # c and lr do not vary
    assert [p["layer"] for p in predictors[-2:]] == ["conv1/Conv_0", "logits/Dense_0"]
    # the predictor values are the runs' probe records at the early step, and rho is their Spearman
    # correlation with the acquisition steps (never acquired = steps + 1), recomputed here from ranks
    for predictor in predictors:
        group = results["group_names"].index(predictor["group"])
        records = [next(p for p in r["probes"] if p["step"] == 10) for r in results["runs"]]
        records = [rec["layers"][predictor["layer"]] if predictor["layer"] else rec for rec in records]
        assert predictor["values"] == pytest.approx([rec[predictor["statistic"]][group] for rec in records])
        assert predictor["n"] == 3
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


def test_the_gradient_study_refuses_several_pattern_looks():
    from anatomy_jax.experiment.gradient_alignment import GradientAlignmentConfig

    with pytest.raises(ValueError, match="probes one pattern look"):
        GradientAlignmentConfig(patterns=("checkerboard", "solid")).validate()
    GradientAlignmentConfig(pattern="solid").validate()
