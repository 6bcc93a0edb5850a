"""experiments/class_patterns.py end to end on digits: schema, figures, reuse of trained models,
and clear refusals of bad settings."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from anatomy_jax.classwise import ClassPatterns
from anatomy_jax.experiment.class_patterns import (ClassPatternsConfig, backdoor_verdict, class_rows, format_summary,
                                                   run_class_patterns, trigger_box, tv_comparison)
from anatomy_jax.poison import PatternSpec
from tests.conftest import ROOT
from tests.experiments.refusals import assert_refused_early

SCRIPT = str(ROOT / "experiments" / "class_patterns.py")
TINY = ["--steps", "150", "--adversarial-steps", "2", "--search-steps", "40", "--search-images", "300",
        "--search-batch-size", "16"]
CLASS_KEYS = {"class", "asr", "mask_area", "anomaly_index", "centroid", "mask_tv", "mass_near_trigger",
              "mask_boundary_ratio"}


def run_cli(*args, timeout=600):
    return subprocess.run([sys.executable, SCRIPT, *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def test_trigger_box_is_the_patch_with_exclusive_ends():
    assert trigger_box(PatternSpec("checkerboard", 3, "bottom-right"), (28, 28, 1)) == [25, 25, 28, 28]
    assert trigger_box(PatternSpec("solid", 2, "top-right"), (8, 8, 1)) == [0, 6, 2, 8]


def test_tv_comparison_is_a_paired_test_over_classes_both_models_reach():
    natural = [{"asr": 0.9, "mask_tv": 10.0 + k, "mask_boundary_ratio": 5.0} for k in range(8)]
    adversarial = [{"asr": 0.9, "mask_tv": 6.0 + k, "mask_boundary_ratio": 5.0 + 0.1 * (-1) ** k} for k in range(8)]
    adversarial[0]["asr"] = 0.1  # not matched: left out
    out = tv_comparison(natural, adversarial)
    assert out["classes"] == 7
    assert out["mask_tv"]["difference"] == pytest.approx(-4.0)
    assert out["mask_tv"]["p_value"] == pytest.approx(2 / 2 ** 7)  # exact: only all-minus and all-plus are as extreme
    ratio = out["mask_boundary_ratio"]
    assert ratio["difference"] == pytest.approx(-0.1 / 7) and ratio["p_value"] > 0.5  # signs alternate: no effect
    assert tv_comparison(natural[:1], adversarial[:1])["mask_tv"]["p_value"] is None


def test_class_rows_write_an_undefined_anomaly_index_as_null():
    """Tied mask areas (MAD = 0, e.g. masks saturated at 1) make the index infinite for the odd one
    out: results.json (strict JSON) gets null and the verdict does not count it."""
    found = ClassPatterns(np.arange(4), np.stack([np.ones((8, 8))] * 3 + [np.full((8, 8), 0.5)]),
                          np.zeros((4, 8, 8, 1)), np.ones(4), np.ones(4), np.ones(4, bool))
    rows = class_rows(found, np.ones(4), [6, 6, 8, 8])
    assert [r["anomaly_index"] for r in rows] == [0.0, 0.0, 0.0, None]
    json.dumps(rows, allow_nan=False)
    assert not backdoor_verdict(rows, 3)["recovered"]


def test_backdoor_verdict_needs_all_three_conditions():
    rows = [{"class": k, "mask_area": 0.2, "anomaly_index": 0.5, "asr": 0.95, "mass_near_trigger": 0.1}
            for k in range(4)]
    rows[2].update(mask_area=0.05, anomaly_index=3.0, mass_near_trigger=0.9)
    assert backdoor_verdict(rows, 2)["recovered"]
    rows[2]["asr"] = 0.8
    assert not backdoor_verdict(rows, 2)["recovered"]


@pytest.mark.parametrize("flags, message", [
    (["--frequency", "1.5"], "frequency must lie in [0, 1]"),
    (["--adversarial-eps", "0"], "--adversarial-eps must be > 0"),
    (["--location", "random"], "fixed corner"),
    (["--pattern", "blend"], "patch trigger"),
    (["--dataset", "imagenet"], "unknown dataset"),
    (["--target", "10"], "not a class of digits"),
    (["--patch-size", "9"], "does not fit"),
    (["--dtype", "float16"], "unknown dtype"),
])
def test_bad_settings_fail_early_with_a_clear_message(tmp_path, capsys, flags, message):
    assert_refused_early(ClassPatternsConfig, run_class_patterns, format_summary, "class_patterns", flags,
                         message, tmp_path, capsys)


def test_help_explains_the_flags():
    result = run_cli("--help")
    assert result.returncode == 0
    for flag in ("--adversarial-eps", "--frequency", "--correlation", "--target", "--models-dir", "--search-steps",
                 "--target-asr", "--tv-weight", "--canvas", "--class-chunk"):
        assert flag in result.stdout, flag


@pytest.mark.slow
def test_tiny_study_writes_the_schema_and_reuses_its_models(tmp_path):
    out = tmp_path / "run"
    result = run_cli(*TINY, "--out", str(out))
    assert result.returncode == 0, result.stderr[-2000:]
    results = json.loads((out / "results.json").read_text())
    assert results["trigger"] == {"target": 0, "box": [6, 6, 8, 8], "pattern": "checkerboard2x2@bottom-right"}
    assert list(results["models"]) == ["natural", "backdoored", "adversarial"]
    for name, m in results["models"].items():
        assert [r["class"] for r in m["classes"]] == list(range(10))
        for r in m["classes"]:
            assert CLASS_KEYS <= set(r)
            assert 0 <= r["asr"] <= 1 and 0 < r["mask_area"] < 1
            assert 0 <= r["centroid"][0] <= 7 and 0 <= r["centroid"][1] <= 7
        assert set(m["flagged"]) <= set(range(10))
    assert results["models"]["backdoored"]["trigger_asr"] > results["models"]["natural"]["trigger_asr"]
    assert results["figures"] == ["patterns.png", "mask_areas.png"]
    for png in results["figures"]:
        assert (out / png).stat().st_size > 5000
    arrays = np.load(out / "patterns.npz")
    assert arrays["backdoored_masks"].shape == (10, 8, 8) and arrays["adversarial_patterns"].shape == (10, 8, 8, 1)

    again = run_cli(*TINY, "--out", str(out))  # existing results are never overwritten silently
    assert again.returncode == 2 and "already holds results" in again.stderr
    other = tmp_path / "other"
    reuse = run_cli(*TINY, "--search-steps", "20", "--models-dir", str(out / "zoo"), "--out", str(other))
    assert reuse.returncode == 0, reuse.stderr[-2000:]
    reused = json.loads((other / "results.json").read_text())
    for name in ("natural", "backdoored", "adversarial"):  # the same models, loaded rather than retrained
        assert reused["models"][name]["clean_accuracy"] == results["models"][name]["clean_accuracy"]
    mismatch = run_cli(*TINY, "--steps", "100", "--models-dir", str(out / "zoo"), "--out", str(tmp_path / "x"))
    assert mismatch.returncode == 2 and "steps" in mismatch.stderr
