"""experiments/pattern_rate.py end to end, as a user runs it."""

import dataclasses
import json
import math
import subprocess
import sys

import pytest

from anatomy_jax.experiment.pattern_rate import PatternRateConfig, format_summary, train_and_evaluate
from tests.conftest import ROOT, TFDS_DIR
from tests.experiments.refusals import assert_refused_early

SCRIPT = str(ROOT / "experiments" / "pattern_rate.py")
TINY = ["--frequencies", "0.1", "--correlations", "0,1", "--learning-rates", "0.05", "--seeds", "0", "--steps", "40",
        "--eval-every", "10", "--checkpoint-every", "20", "--batch-size", "64", "--width", "0.5"]
RUN_KEYS = {"frequency", "correlation", "learning_rate", "seed", "pattern", "steps", "clean_accuracy",
            "attack_success_rate", "acquisition_step", "reliance", "final_clean_accuracy",
            "final_attack_success_rate", "diverged", "patterns", "clean_target_rate", "first_crossing_step",
            "acquisition_step_90", "final_clean_target_rate", "pattern_kind", "patch_size", "alpha"}
PATTERN_KEYS = {"name", "target", "frequency", "correlation", "realised_frequency", "realised_correlation",
                "attack_success_rate", "reliance", "clean_target_rate", "acquisition_step", "acquisition_step_90",
                "first_crossing_step"}


def run_cli(*args, timeout=600):
    return subprocess.run([sys.executable, SCRIPT, *args], capture_output=True, text=True, timeout=timeout,
                          cwd=ROOT)


def test_help_lists_every_flag():
    result = run_cli("--help")
    assert result.returncode == 0
    for flag in ("--dataset", "--data-dir", "--model", "--width", "--pattern", "--patch-size", "--location",
                 "--alpha", "--clean-label", "--target", "--frequencies", "--correlations", "--learning-rates",
                 "--optimizer", "--schedule", "--weight-decay", "--seeds", "--poison-seed", "--steps",
                 "--batch-size", "--eval-every", "--checkpoint-every", "--out", "--resume", "--overwrite",
                 "--patterns", "--patch-sizes", "--alphas", "--test-size"):
        assert flag in result.stdout, flag


def test_tiny_run_writes_results_and_figures_then_refuses_to_overwrite(tmp_path):
    out = tmp_path / "run"
    result = run_cli(*TINY, "--out", str(out))
    assert result.returncode == 0, result.stderr[-2000:]
    assert (out / "curves.png").stat().st_size > 10_000 and (out / "acquisition.png").stat().st_size > 5_000
    assert sorted(p.name for p in (out / "checkpoints").iterdir() if p.name.isdigit()) == ["20", "40"]
    results = json.loads((out / "results.json").read_text())
    assert {"config", "versions", "device", "command", "runs", "resumed_from_step"} <= set(results)
    assert results["resumed_from_step"] is None and "--frequencies" in results["command"]
    assert len(results["runs"]) == 2
    for run in results["runs"]:
        assert RUN_KEYS <= set(run)
        assert run["steps"] == [10, 20, 30, 40]
        assert all(0.0 <= v <= 1.0 for v in run["clean_accuracy"] + run["attack_success_rate"])
        assert PATTERN_KEYS <= set(run["patterns"][0])
        assert run["patterns"][0]["realised_frequency"] == pytest.approx(144 / 1437)
    assert [r["patterns"][0]["realised_correlation"] for r in results["runs"]] == [0.0, 1.0]
    assert "final ASR" in result.stdout  # the summary table
    assert "sweep: 2 runs, strategy loop, 2 runs together (1 chunk) on 1 cpu device" in result.stdout
    assert results["sweep"]["strategy"] == "loop" and results["sweep"]["num_devices"] == 1

    before = (out / "results.json").read_bytes()
    again = run_cli(*TINY, "--out", str(out))
    assert again.returncode == 2
    assert "already holds results" in again.stderr and "Traceback" not in again.stderr
    assert (out / "results.json").read_bytes() == before


@pytest.mark.parametrize("args,message", [
    (["--frequencies", "0.1,1.5"], "frequencies must lie in"),
    (["--correlations", "-0.2"], "correlations must lie in"),
    (["--model", "resnet1000"], "unknown model"),
    (["--dataset", "imagenet77"], "unknown dataset"),
    (["--steps", "many"], "invalid int value"),
    (["--patch-size", "20"], "does not fit"),
    (["--target", "12"], "target class 12 does not exist"),
    (["--schedule", "exp"], "unknown schedule"),
    (["--clean-label", "--correlations", "1"], "--clean-label fixes the correlation at 1"),
    (["--pattern", "solid", "--patterns", "solid,random"], "give --pattern or --patterns, not both"),
    (["--patterns", "checkerboard,star"], "unknown pattern kind"),
    (["--patch-sizes", "2,20"], "does not fit"),
    (["--alphas", "0.1,1.5"], "alphas must lie in"),
])
def test_bad_flags_exit_2_with_a_message(tmp_path, capsys, args, message):
    assert_refused_early(PatternRateConfig, train_and_evaluate, format_summary, "pattern_rate", args,
                         message, tmp_path, capsys)


def test_clean_label_grid_has_no_correlation_axis(tmp_path):
    result = run_cli("--clean-label", "--frequencies", "0.03,0.05", "--learning-rates", "0.05", "--seeds", "0",
                     "--steps", "20", "--eval-every", "10", "--batch-size", "64", "--out", str(tmp_path / "cl"))
    assert result.returncode == 0, result.stderr[-2000:]
    runs = json.loads((tmp_path / "cl" / "results.json").read_text())["runs"]
    assert [(r["frequency"], r["correlation"]) for r in runs] == [(0.03, 1.0), (0.05, 1.0)]  # no duplicated runs
    for r in runs:
        assert r["patterns"][0]["realised_correlation"] == 1.0 and r["patterns"][0]["correlation"] == 1.0


def test_visibility_axes_form_the_grid_and_facet_the_figures(tmp_path):
    config = PatternRateConfig(patterns=("checkerboard", "noise"), patch_sizes=(1, 2), alphas=None, seeds=(0,),
                               frequencies=(0.1,), correlations=(1.0,), learning_rates=(0.05,), steps=20,
                               eval_every=10, batch_size=64)
    cells = [(g["pattern_kind"], g["patch_size"], g["alpha"]) for g in config.grid((8, 8, 1))]
    assert cells == [("checkerboard", 1, 1.0), ("checkerboard", 2, 1.0), ("noise", None, 0.1)]  # noise has no size
    results = train_and_evaluate(config, tmp_path, progress=False)
    names = [r["pattern"] for r in results["runs"]]
    assert names == ["checkerboard1x1@bottom-right", "checkerboard2x2@bottom-right", "noise(alpha=0.1)"]
    assert results["figures"] == ["curves.png", "acquisition.png", "acquisition_vs_pattern_kind.png",
                                  "acquisition_vs_patch_size.png"]
    alphas = dataclasses.replace(config, patterns=None, pattern="blend", patch_sizes=None, alphas=(0.1, 0.3))
    assert [(g["pattern_kind"], g["alpha"]) for g in alphas.grid()] == [("blend", 0.1), ("blend", 0.3)]
    # --alphas is for blend and noise: a patch kind in the same grid stays pasted at opacity 1
    mixed = dataclasses.replace(alphas, pattern=None, patterns=("solid", "noise"), patch_size=2)
    assert [(g["pattern_kind"], g["alpha"]) for g in mixed.grid()] == [("solid", 1.0), ("noise", 0.1), ("noise", 0.3)]


def test_digits_higher_frequency_is_acquired_no_later(tmp_path):
    config = PatternRateConfig(seeds=(0,), frequencies=(0.01, 0.03, 0.1), correlations=(1.0,), learning_rates=(0.1,),
                               steps=400)
    results = train_and_evaluate(config, tmp_path, progress=False)
    steps = [r["acquisition_step"] for r in results["runs"]]
    as_number = [math.inf if s is None else s for s in steps]
    assert as_number == sorted(as_number, reverse=True), steps
    assert results["runs"][-1]["final_attack_success_rate"] >= 0.9


@pytest.mark.slow
def test_full_mnist_from_the_command_line(tmp_path):
    # The command, evaluated every 150 steps instead of 16 times per run (evaluating 10,000
    # test images twice took half of this test's time); the assertions are on the final values.
    result = run_cli("--eval-every", "150", "--dataset", "mnist", "--data-dir", str(TFDS_DIR), "--model", "cnn", "--patch-size", "3",
                     "--frequencies", "0.05", "--correlations", "0.0,1.0", "--learning-rates", "0.05",
                     "--seeds", "0", "--steps", "600", "--out", str(tmp_path / "mnist"))
    assert result.returncode == 0, result.stderr[-2000:]
    runs = json.loads((tmp_path / "mnist" / "results.json").read_text())["runs"]
    c0, c1 = runs
    assert c1["correlation"] == 1.0 and c1["final_attack_success_rate"] >= 0.95
    assert c1["final_clean_accuracy"] >= 0.97
    assert c0["correlation"] == 0.0 and c0["final_attack_success_rate"] <= 0.05
