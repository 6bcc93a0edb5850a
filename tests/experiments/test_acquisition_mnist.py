"""Pattern acquisition on a real-MNIST subset, 3 seeds (seed 000's qualitative claims, tested):

* the median sustained acquisition step does not increase with the frequency (at c = 1), nor with
  the correlation (at a fixed frequency);
* an early ASR spike of a barely trained net (it calls most images the target, with or without
  the pattern) is reproduced, and is not reported as acquisition;
* of two competing patterns that differ only in frequency (and where they sit), the more frequent
  one is acquired first in every seed.
"""

from __future__ import annotations

import math
import statistics

import pytest

from anatomy_jax.experiment.pattern_competition import PatternCompetitionConfig, run_pattern_competition
from anatomy_jax.experiment.pattern_rate import PatternRateConfig, train_and_evaluate
from tests.conftest import TFDS_DIR

pytestmark = pytest.mark.slow

SMALL_MNIST = dict(dataset="mnist", data_dir=str(TFDS_DIR), train_size=10000, test_size=500, width=0.5,
                   batch_size=64, eval_every=10, checkpoint_every=0, seeds=(0, 1, 2))


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    config = PatternRateConfig(**SMALL_MNIST, frequencies=(0.03, 0.1), correlations=(0.5, 1.0),
                               learning_rates=(0.02,), steps=200)
    return train_and_evaluate(config, tmp_path_factory.mktemp("acquisition"), progress=False)


def _median_step(runs: list[dict], frequency: float, correlation: float) -> float:
    steps = [r["acquisition_step"] for r in runs if r["frequency"] == frequency and r["correlation"] == correlation]
    assert len(steps) == 3
    return statistics.median(math.inf if s is None else s for s in steps)


def test_every_pattern_curve_is_aligned_with_the_steps(grid):
    for r in grid["runs"]:
        for p in r["patterns"]:
            assert len(p["clean_target_rate"]) == len(p["attack_success_rate"]) == len(r["steps"])
        assert r["clean_target_rate"] == r["patterns"][0]["clean_target_rate"]


def test_median_acquisition_does_not_increase_with_frequency_at_full_correlation(grid):
    medians = [_median_step(grid["runs"], f, 1.0) for f in (0.03, 0.1)]
    assert medians == sorted(medians, reverse=True), medians
    assert medians[-1] < math.inf, "the most frequent perfectly correlated pattern is never acquired"


def test_median_acquisition_does_not_increase_with_correlation(grid):
    for f in (0.03, 0.1):
        assert _median_step(grid["runs"], f, 1.0) <= _median_step(grid["runs"], f, 0.5), f


def test_an_untrained_nets_spike_is_not_acquisition(grid):
    # A spike: the ASR crosses the threshold at an early evaluation while the net also calls at
    # least half the unstamped images the target, and falls below the threshold again later.
    spikes = []
    for r in grid["runs"]:
        for i, (asr, base) in enumerate(zip(r["attack_success_rate"], r["clean_target_rate"])):
            if asr >= 0.5 and base >= 0.5 and min(r["attack_success_rate"][i:]) < 0.5:
                spikes.append((r, r["steps"][i]))
                break
    assert spikes, "no early spike reproduced"
    for r, step in spikes:
        assert step < r["steps"][len(r["steps"]) // 4], "the spike should come early in training"
        assert r["first_crossing_step"] <= step
        assert r["acquisition_step"] is None or r["acquisition_step"] > step
        later = [a for s, a in zip(r["steps"], r["attack_success_rate"]) if s >= (r["acquisition_step"] or math.inf)]
        assert all(a >= 0.5 for a in later)


def test_the_more_frequent_of_two_competing_patterns_is_acquired_first(tmp_path):
    config = PatternCompetitionConfig(
        **SMALL_MNIST, steps=200, learning_rates=(0.02,), schedules=("constant",),
        pattern_spec=("checkerboard:size=3:at=top-left:target=1:f=0.1:c=1:name=frequent",
                      "checkerboard:size=3:at=bottom-right:target=1:f=0.02:c=1:name=rare"))
    results = run_pattern_competition(config, tmp_path, progress=False)
    assert len(results["runs"]) == 3
    for r in results["runs"]:
        frequent, rare = r["patterns"]
        assert frequent["acquisition_step"] is not None, r["seed"]
        assert rare["acquisition_step"] is None or rare["acquisition_step"] > frequent["acquisition_step"], r["seed"]
        assert r["acquisition_order"][0] == "frequent"
