"""experiments/attribution.py end to end on digits (schema, figures) and clear refusals of bad settings."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from anatomy_jax.experiment.attribution import (METHODS, AttributionConfig, format_summary, randomisation_spearman,
                                                run_attribution)
from tests.conftest import ROOT
from tests.experiments.refusals import assert_refused_early

SCRIPT = str(ROOT / "experiments" / "attribution.py")


@pytest.mark.parametrize("flags, message", [
    (["--areas", "0,0.1"], "--areas must lie in (0, 1)"),
    (["--rise-masks", "100"], "multiple of 250"),
    (["--ep-variant", "keep"], "--ep-variant"),
    (["--location", "random"], "fixed corner"),
    (["--grad-cam-layer", "features"], "not a spatial stage"),
])
def test_bad_settings_fail_early_with_a_clear_message(tmp_path, capsys, flags, message):
    assert_refused_early(AttributionConfig, run_attribution, format_summary, "attribution", flags,
                         message, tmp_path, capsys)


def test_randomisation_spearman_is_null_when_defined_on_fewer_than_half_of_the_images():
    a = np.random.default_rng(0).random((4, 5, 5))
    dead, half = a.copy(), a.copy()
    dead[:3] = 0.0  # an all-zero map (e.g. Grad-CAM of a re-initialised net): undefined on 3 of 4 images
    half[:2] = 0.0  # undefined on 2 of 4: still the result
    rows = randomisation_spearman({"same": a, "dead": a, "half": a}, {"same": a, "dead": dead, "half": half})
    assert rows["same"]["mean"] == pytest.approx(1.0) and (rows["same"]["images"], rows["same"]["constant"]) == (4, 0)
    assert rows["dead"] == {"mean": None, "sd": None, "images": 1, "constant": 3}  # not the mean of 1 image
    assert rows["half"]["images"] == 2 and rows["half"]["mean"] == pytest.approx(1.0)


@pytest.mark.slow
def test_tiny_run_writes_the_schema_and_three_figures(tmp_path):
    out = tmp_path / "run"
    result = subprocess.run([sys.executable, SCRIPT, "--steps", "300", "--images", "8", "--clean-images", "4",
                             "--ep-iterations", "150", "--mp-iterations", "60", "--rise-masks", "250",
                             "--ig-steps", "5", "--smoothgrad-samples", "4", "--out", str(out)],
                            capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-2000:]
    results = json.loads((out / "results.json").read_text())
    assert set(results["methods"]) == set(METHODS)
    for name, row in results["methods"].items():
        assert {"pointing_game", "deletion_auc", "insertion_auc", "mask_area_error"} <= set(row)
        assert (row["mask_area_error"] is None) == (name != "extremal")
        assert 0 <= row["pointing_game"] <= 1
    assert results["trigger"] == {"target": 0, "box": [6, 6, 8, 8], "pattern": results["trigger"]["pattern"]}
    assert results["areas"] == [0.05, 0.1, 0.2]
    control = results["control"]
    assert control["chance_pointing_game"] == 4 / 64  # the 2x2 trigger box of an 8x8 digit
    for group in ("natural", "natural_target", "randomised"):
        assert set(control[group]) == set(METHODS)
        assert all(0 <= row["pointing_game"] <= 1 for row in control[group].values())
    n = results["images"]["stamped"]
    summary = format_summary(results)
    for name, row in results["methods"].items():
        for kind, key in (("spearman", "randomisation_spearman"), ("floor", "randomisation_floor")):
            stats = results["randomisation"][kind][name]
            assert stats["images"] + stats["constant"] == n
            assert row[key] == stats["mean"] and row[f"{key}_sd"] == stats["sd"]
            assert (row[key] is None) == (stats["images"] < n / 2)
            assert row[key] is None or -1 <= row[key] <= 1
            if row[key] is None:
                assert f"map constant on {stats['constant']} of {n} images" in summary
    assert results["methods"]["gradient"]["randomisation_spearman"] is not None
    for name in ("gradient", "gradient_x_input", "integrated_gradients"):  # deterministic: the floor is 1
        assert results["methods"][name]["randomisation_floor"] == pytest.approx(1.0)
    # the noise floor of a random method is below 1: the re-initialised maps use another key than the trained ones
    assert results["methods"]["smoothgrad"]["randomisation_floor"] < 0.999
    assert "noise floor" in summary and "nat tgt" in summary
    for png in ("masks.png", "area_curves.png", "deletion_insertion.png"):
        assert (out / png).stat().st_size > 0
