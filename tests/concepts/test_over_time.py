"""The over-time schedule (step 0, dense early) and the summary of when the planted concept
appears, on hand-made run entries (no training)."""

from __future__ import annotations

import pytest

from anatomy_jax.concepts import tracking_steps
from anatomy_jax.experiment.net2vec import CONTROL_MARGIN, over_time


def test_tracking_steps_start_at_zero_and_are_dense_early():
    steps = tracking_steps(600, 5, 20)
    assert steps[0] == 0 and steps[-1] == 600 and list(steps) == sorted(set(steps))
    assert all(s % 5 == 0 for s in steps) and len(steps) <= 21
    assert steps[1:6] == (5, 10, 15, 20, 25)  # every early evaluation
    gaps = [b - a for a, b in zip(steps[1:], steps[2:])]
    assert gaps == sorted(gaps)  # sparser later
    assert tracking_steps(40, 20, 5) == (0, 20, 40)  # all evaluations when there are few
    assert tracking_steps(45, 20, 5) == (0, 20, 40, 45)  # the last step is an evaluation
    with pytest.raises(ValueError, match="points"):
        tracking_steps(10, 5, 0)


def _record(step, acc, asr, iou1, iou2):
    return {"step": step, "clean_accuracy": acc, "attack_success_rate": asr,
            "layers": {"conv1": {"planted": {"single_filter_iou": 0.1, "combination_iou": iou1}},
                       "conv2": {"planted": {"single_filter_iou": 0.1, "combination_iou": iou2}}}}


def test_over_time_summary_hand_computed():
    # the loop evaluates every 10 steps (ASR at 10..50); concepts are tracked at 0, 10, 20, 50
    backdoored = {"model": "backdoored", "steps": [10, 20, 30, 40, 50], "clean_accuracy": [0.5] * 5,
                  "attack_success_rate": [0.9, 0.2, 0.6, 0.7, 0.9],  # early collapse, sustained from 30
                  "concepts": [_record(0, 0.1, 0.0, 0.6, 0.1), _record(10, 0.5, 0.9, 0.55, 0.15),
                               _record(20, 0.5, 0.2, 0.62, 0.45), _record(50, 0.5, 0.9, 0.65, 0.55)]}
    natural = {"model": "natural", "steps": [10, 20, 30, 40, 50], "clean_accuracy": [0.5] * 5,
               "attack_success_rate": [0.0] * 5,
               "concepts": [_record(0, 0.1, 0.0, 0.6, 0.1), _record(10, 0.5, 0.0, 0.6, 0.1),
                            _record(20, 0.5, 0.0, 0.6, 0.3), _record(50, 0.5, 0.0, 0.66, 0.1)]}
    series, summary = over_time({"backdoored": backdoored, "natural": natural}, ("conv1", "conv2"))
    assert [p["step"] for p in series] == [0, 10, 20, 50]
    assert series[0]["attack_success_rate"] == 0.0 and series[2]["natural"]["layers"]["conv2"]["combination_iou"] == 0.3
    assert summary["acquisition_step"] == 30 and summary["tracked_steps"] == [0, 10, 20, 50]
    conv1, conv2 = summary["layers"]["conv1"], summary["layers"]["conv2"]
    # conv1: >= 0.5 from the untrained net on, as in the natural control: never beyond it
    assert (conv1["concept_step"], conv1["lag"], conv1["initial_iou"], conv1["final_iou"]) == (0, -30, 0.6, 0.65)
    assert conv1["natural_concept_step"] == 0 and conv1["beyond_natural_step"] is None
    # conv2: >= 0.5 only at 50; the gap to the natural control (0, 0.05, 0.15, 0.45) stays >= the margin from 20
    assert CONTROL_MARGIN == 0.1
    assert (conv2["concept_step"], conv2["lag"]) == (50, 20)
    assert (conv2["beyond_natural_step"], conv2["beyond_natural_lag"]) == (20, -10)
    assert conv2["natural_concept_step"] is None and conv2["natural_final_iou"] == 0.1
    # without the control, no natural fields
    series, summary = over_time({"backdoored": backdoored}, ("conv1",))
    assert "natural" not in series[0] and "beyond_natural_step" not in summary["layers"]["conv1"]
