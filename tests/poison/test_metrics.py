"""Acquisition steps: sustained (held at every later evaluation) against the first crossing."""

from __future__ import annotations

import pytest

from anatomy_jax.poison import acquisition_step, first_crossing_step

STEPS = [10, 20, 30, 40, 50]


@pytest.mark.parametrize("asr, sustained, first", [
    ([0.9, 0.2, 0.6, 0.7, 0.8], 30, 10),  # an early spike, then acquisition from step 30
    ([0.1, 0.6, 0.4, 0.5, 0.5], 40, 20),  # exactly at the threshold counts
    ([0.1, 0.2, 0.6, 0.9, 0.4], None, 30),  # lost again by the last evaluation: not acquired
    ([0.6, 0.7, 0.8, 0.9, 1.0], 10, 10),
    ([0.1, 0.2, 0.3, 0.4, 0.4], None, None),
    ([0.9, 0.9, None, None, None], None, 10),  # diverged after step 20: missing values are not acquisition
])
def test_sustained_acquisition_and_first_crossing(asr, sustained, first):
    assert acquisition_step(asr, STEPS, 0.5) == sustained
    assert first_crossing_step(asr, STEPS, 0.5) == first


def test_nan_breaks_a_sustained_run():
    assert acquisition_step([0.9, float("nan"), 0.9], [1, 2, 3]) == 3
