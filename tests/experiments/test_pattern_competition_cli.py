"""experiments/pattern_competition.py end to end on digits, and its acquisition order."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from anatomy_jax.experiment.pattern_competition import (PatternCompetitionConfig, acquisition_order, format_summary,
                                                        run_pattern_competition)
from tests.conftest import ROOT
from tests.experiments.refusals import assert_refused_early

SCRIPT = str(ROOT / "experiments" / "pattern_competition.py")
SPECS = ["--pattern-spec", "checkerboard:size=2:at=top-left:target=1:f=0.1:c=1:name=big",
         "--pattern-spec", "solid:size=1:at=bottom-right:target=2:f=0.05:c=0.5"]
TINY = ["--learning-rates", "0.05", "--seeds", "0,1", "--steps", "30", "--eval-every", "10", "--batch-size", "64"]
PATTERN_KEYS = {"name", "target", "frequency", "correlation", "realised_frequency", "realised_correlation",
                "attack_success_rate", "reliance", "clean_target_rate", "acquisition_step", "first_crossing_step",
                "decays_before_acquisition"}


def run_cli(*args, timeout=600):
    return subprocess.run([sys.executable, SCRIPT, *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def test_acquisition_order_puts_acquired_patterns_first_by_step():
    patterns = [{"name": "a", "acquisition_step": None}, {"name": "b", "acquisition_step": 30},
                {"name": "c", "acquisition_step": 10}, {"name": "d", "acquisition_step": 30}]
    assert acquisition_order(patterns) == ["c", "b", "d", "a"]


def test_help_documents_the_pattern_spec_syntax():
    result = run_cli("--help")
    assert result.returncode == 0
    for text in ("--pattern-spec", "--patterns-file", "--schedules", "KIND[:key=value]", "clean-label"):
        assert text in result.stdout, text


def test_tiny_competition_writes_the_pattern_rate_schema_and_figures(tmp_path):
    out = tmp_path / "run"
    result = run_cli(*SPECS, *TINY, "--schedules", "constant,step", "--out", str(out))
    assert result.returncode == 0, result.stderr[-2000:]
    results = json.loads((out / "results.json").read_text())
    assert [(r["schedule"], r["seed"]) for r in results["runs"]] == [("constant", 0), ("constant", 1), ("step", 0),
                                                                    ("step", 1)]
    for r in results["runs"]:
        assert [p["name"] for p in r["patterns"]] == ["big", "solid1x1@bottom-right"]
        assert sorted(r["acquisition_order"]) == ["big", "solid1x1@bottom-right"]
        assert r["decay_steps"] == ([] if r["schedule"] == "constant" else [10, 20])
        for p in r["patterns"]:
            assert PATTERN_KEYS <= set(p)
            assert len(p["clean_target_rate"]) == len(p["attack_success_rate"]) == len(r["steps"]) == 3
    big, small = results["runs"][0]["patterns"]
    assert (big["target"], big["frequency"], big["correlation"]) == (1, 0.1, 1.0)
    assert small["realised_correlation"] == pytest.approx(0.5, abs=0.02)
    assert big["realised_frequency"] == pytest.approx(0.1, abs=1e-3)
    assert results["figures"] == ["competition_curves.png", "acquisition_order.png"]
    assert (out / "competition_curves.png").stat().st_size > 10_000
    assert "acquisition order over seeds" in result.stdout


def test_patterns_file_equals_the_same_specs_on_the_command_line(tmp_path):
    spec = [{"kind": "checkerboard", "size": 2, "at": "top-left", "target": 1, "f": 0.1, "c": 1, "name": "big"}]
    path = tmp_path / "patterns.json"
    path.write_text(json.dumps(spec))
    args = ["--learning-rates", "0.05", "--seeds", "0", "--steps", "10", "--eval-every", "10", "--batch-size", "64",
            "--schedules", "constant"]
    a = run_cli("--patterns-file", str(path), *args, "--out", str(tmp_path / "a"))
    b = run_cli("--pattern-spec", "checkerboard:size=2:at=top-left:target=1:f=0.1:c=1:name=big", *args,
                "--out", str(tmp_path / "b"))
    assert a.returncode == b.returncode == 0, a.stderr[-2000:] + b.stderr[-2000:]
    ra, rb = (json.loads((tmp_path / x / "results.json").read_text())["runs"][0] for x in "ab")
    assert ra["patterns"][0]["attack_success_rate"] == rb["patterns"][0]["attack_success_rate"]


@pytest.mark.parametrize("args,message", [
    (["--pattern-spec", "checkerboard:f=0.1:name=x", "--pattern-spec", "solid:f=0.1:name=x"], "pattern names must be unique"),
    (["--pattern-spec", "star:f=0.1"], "unknown pattern kind"),
    (["--pattern-spec", "checkerboard:f=1.5"], "frequency"),
    (["--pattern-spec", "checkerboard:f=0.1:colour=red"], "allowed keys"),
    (["--pattern-spec", "checkerboard:f=0.1:target=11"], "target class 11 does not exist"),
    (["--pattern-spec", "checkerboard:size=9:f=0.1"], "does not fit"),
    (["--pattern-spec", "checkerboard:f=0.6:target=1", "--pattern-spec", "solid:at=top-left:f=0.6:target=2"],
     "images are free"),
    (["--schedules", "constant,exp"], "unknown schedule"),
    (["--schedule", "step", "--schedules", "constant,step"], "give --schedule or --schedules, not both"),
    (["--schedule", "step", "--patterns-file", "/nonexistent.json"], "nonexistent.json"),
])
def test_bad_flags_exit_2_with_a_message(tmp_path, capsys, args, message):
    assert_refused_early(PatternCompetitionConfig, run_pattern_competition, format_summary, "pattern_competition", args,
                         message, tmp_path, capsys)


def test_probes_run_inside_the_competition_sweep(tmp_path):
    config = PatternCompetitionConfig(
        pattern_spec=("checkerboard:size=2:at=top-left:target=1:f=0.1:c=1:name=big",
                      "solid:size=1:at=bottom-right:target=2:f=0.05:c=0.5:name=dot"),
        learning_rates=(0.05,), schedules=("constant",), seeds=(0, 1), steps=20, eval_every=10, batch_size=64,
        probe=True, early_step=10, probe_size=32, chunk_size=16)
    results = run_pattern_competition(config, tmp_path, progress=False)
    for r in results["runs"]:
        assert [p["step"] for p in r["probes"]] == [10, 20]
        record = r["probes"][0]
        assert len(record["projection_share"]) == 5  # clean, then target/other groups of each pattern
        big, dot = r["patterns"]
        # each group weighs its real share of the training images
        assert record["weight"][1] == pytest.approx(big["realised_frequency"], rel=1e-4)
        assert record["weight"][3] + record["weight"][4] == pytest.approx(dot["realised_frequency"], rel=1e-4)
    analysis = results["probe_analysis"]
    assert analysis["runs"] == 2 and analysis["points"] == 4 and "Spearman" in analysis["verdict"]
