"""experiments/similarity_overlay.py end to end on digits: schema, figure, the trigger query, and
clear refusals of bad settings."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from anatomy_jax.experiment.similarity_overlay import (SimilarityOverlayConfig, _chebyshev_to_box, format_summary,
                                                       run_similarity_overlay)
from tests.conftest import ROOT
from tests.experiments.refusals import assert_refused_early

SCRIPT = str(ROOT / "experiments" / "similarity_overlay.py")


def test_distance_to_the_trigger_box():
    box = [6, 6, 8, 8]
    assert _chebyshev_to_box((6, 7), box) == 0 and _chebyshev_to_box((7, 7), box) == 0
    assert _chebyshev_to_box((5, 7), box) == 1 and _chebyshev_to_box((0, 0), box) == 6


@pytest.mark.parametrize("flags, message", [
    (["--second-seed", "0"], "--second-seed must differ"),
    (["--layers", "features"], "no spatial map"),
    (["--layers", "conv9"], "unknown layer"),
    (["--query-image", "5000"], "non-target images"),
    (["--frequency", "0"], "--frequency > 0"),
])
def test_bad_settings_fail_early_with_a_clear_message(tmp_path, capsys, flags, message):
    assert_refused_early(SimilarityOverlayConfig, run_similarity_overlay, format_summary, "similarity_overlay", flags,
                         message, tmp_path, capsys)


@pytest.mark.slow
def test_tiny_overlay_study_writes_peaks_and_finds_the_trigger(tmp_path):
    out = tmp_path / "run"
    result = subprocess.run([sys.executable, SCRIPT, "--steps", "200", "--fit-images", "300", "--out", str(out)],
                            capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-2000:]
    results = json.loads((out / "results.json").read_text())
    assert results["layers"] == ["conv1", "conv2"]
    assert [q["name"] for q in results["queries"]] == ["trigger", "stroke"]
    assert results["queries"][0]["yx"] == [7, 7]
    models = ("natural", "backdoored", "backdoored_seed2", "backdoored->seed2")
    assert len(results["columns"]) == 2 * len(models)
    for q in ("trigger", "stroke"):
        for m in models:
            for layer in ("conv1", "conv2"):
                r, c = results["peaks"][q][m][layer]
                assert 0 <= r < 8 and 0 <= c < 8
    arrays = np.load(out / "overlays.npz")
    assert arrays["overlays"].shape == (2, 8, 8, 8)
    assert arrays["overlays"].max() <= 1 + 1e-5 and arrays["overlays"].min() >= -1 - 1e-5
    # the trigger's features reappear where the other stamped image carries the trigger
    assert results["trigger_peaks"]["backdoored"]["conv1"]["distance_px"] <= 1
    overlays = arrays["overlays"][0]  # the trigger query; contrast = mean inside the box - mean outside
    column = [(c["layer"], c["model"]) for c in results["columns"]].index(("conv1", "natural"))
    inside = np.zeros((8, 8), bool)
    inside[6:8, 6:8] = True
    expected = overlays[column][inside].mean() - overlays[column][~inside].mean()
    assert results["trigger_peaks"]["natural"]["conv1"]["contrast"] == pytest.approx(float(expected), abs=1e-6)
    assert (out / "overlays.png").stat().st_size > 5000
