"""experiments/attribution.py end to end on digits (schema, figures) and clear refusals of bad settings."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from anatomy_jax.experiment.attribution import METHODS, AttributionConfig, format_summary, run_attribution
from anatomy_jax.experiment.cli import run_main
from tests.conftest import ROOT

SCRIPT = str(ROOT / "experiments" / "attribution.py")


@pytest.mark.parametrize("flags, message", [
    (["--areas", "0,0.1"], "--areas must lie in (0, 1)"),
    (["--rise-masks", "100"], "multiple of 250"),
    (["--ep-variant", "keep"], "--ep-variant"),
    (["--location", "random"], "fixed corner"),
    (["--grad-cam-layer", "features"], "not a spatial stage"),
])
def test_bad_settings_fail_early_with_a_clear_message(tmp_path, capsys, flags, message):
    with pytest.raises(SystemExit) as exit_:
        run_main(AttributionConfig, "", run_attribution, format_summary, "attribution",
                 [*flags, "--out", str(tmp_path / "out")])
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


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
    for group in ("natural", "randomised"):
        assert set(control[group]) == set(METHODS)
        assert all(0 <= row["pointing_game"] <= 1 for row in control[group].values())
    for row in results["methods"].values():
        rho = row["randomisation_spearman"]
        assert rho is None or -1 <= rho <= 1
    assert results["methods"]["gradient"]["randomisation_spearman"] is not None
    for png in ("masks.png", "area_curves.png", "deletion_insertion.png"):
        assert (out / png).stat().st_size > 0
