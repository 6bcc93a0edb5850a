"""The over-time schedule (step 0, dense early) and the summary of when the planted concept
appears, on hand-made run entries (no training)."""

from __future__ import annotations

import pytest

from anatomy_jax.concepts import tracking_steps
from anatomy_jax.experiment.net2vec import MARGIN_FLOOR, beyond_controls, control_margin, over_time


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


def test_control_margin_is_the_largest_noise_estimate_with_a_floor():
    assert MARGIN_FLOOR == 0.05
    # a control that sits still (spread 0.02, missing values skipped): the floor
    assert control_margin([0.30, None, 0.32, 0.31]) == {"margin": 0.05, "natural_spread": 0.02, "reprobe": None,
                                                         "floor": 0.05}
    assert control_margin([0.4])["margin"] == 0.05 and control_margin([])["natural_spread"] == 0.0
    # the control's spread over training (max - min, step 0 included) sets it
    assert control_margin([0.6, 0.45, 0.6, 0.5])["margin"] == 0.15
    # the re-probe difference sets it when larger; it is ignored when smaller
    assert control_margin([0.6, 0.45, 0.6, 0.5], reprobe=0.2)["margin"] == 0.2
    assert control_margin([0.6, 0.45, 0.6, 0.5], reprobe=0.01) == {"margin": 0.15, "natural_spread": 0.15,
                                                                   "reprobe": 0.01, "floor": 0.05}


def test_beyond_controls_subtracts_the_larger_control():
    def planted(*ious):
        return {layer: {"combination_iou": v} for layer, v in zip(("conv1", "conv2"), ious)}

    control = {"natural": {"planted": planted(0.62, 0.33)}, "untrained": {"planted": planted(0.58, 0.40)}}
    out = beyond_controls(planted(0.67, 0.50), control)
    # conv1: 0.67 - max(0.62, 0.58); conv2: 0.50 - max(0.33, 0.40)
    assert out == {"layers": {"conv1": 0.05, "conv2": 0.1}, "best_layer": "conv2", "best": 0.1,
                   "controls": ["natural", "untrained"]}
    # a missing control value is skipped; a missing backdoored value gives None (and is not the best)
    control["natural"]["planted"]["conv1"]["combination_iou"] = None
    out = beyond_controls(planted(None, 0.30), control)
    assert out["layers"] == {"conv1": None, "conv2": -0.1} and (out["best_layer"], out["best"]) == ("conv2", -0.1)
    assert beyond_controls(planted(0.5, 0.5), {}) == {"layers": {"conv1": None, "conv2": None}, "best_layer": None,
                                                      "best": None, "controls": []}


def test_over_time_summary_hand_computed():
    # the loop evaluates every 10 steps (ASR at 10..50); concepts are tracked at 0, 10, 20, 50
    backdoored = {"model": "backdoored", "steps": [10, 20, 30, 40, 50], "clean_accuracy": [0.5] * 5,
                  "attack_success_rate": [0.9, 0.2, 0.6, 0.7, 0.9],  # early collapse, sustained from 30
                  "concepts": [_record(0, 0.1, 0.0, 0.6, 0.1), _record(10, 0.5, 0.9, 0.55, 0.17),
                               _record(20, 0.5, 0.2, 0.72, 0.45), _record(50, 0.5, 0.9, 0.62, 0.55)]}
    natural = {"model": "natural", "steps": [10, 20, 30, 40, 50], "clean_accuracy": [0.5] * 5,
               "attack_success_rate": [0.0] * 5,
               "concepts": [_record(0, 0.1, 0.0, 0.6, 0.1), _record(10, 0.5, 0.0, 0.45, 0.1),
                            _record(20, 0.5, 0.0, 0.6, 0.13), _record(50, 0.5, 0.0, 0.5, 0.1)]}
    series, summary = over_time({"backdoored": backdoored, "natural": natural}, ("conv1", "conv2"))
    assert [p["step"] for p in series] == [0, 10, 20, 50]
    assert series[0]["attack_success_rate"] == 0.0 and series[2]["natural"]["layers"]["conv2"]["combination_iou"] == 0.13
    assert summary["acquisition_step"] == 30 and summary["tracked_steps"] == [0, 10, 20, 50]
    conv1, conv2 = summary["layers"]["conv1"], summary["layers"]["conv2"]
    # conv1: >= 0.5 from the untrained net on; the control wanders 0.6 -> 0.45 -> 0.6 -> 0.5, so the margin is
    # its spread 0.15, and the gaps (0, 0.10, 0.12, 0.12), above the floor but inside the spread, never count
    assert (conv1["concept_step"], conv1["lag"], conv1["initial_iou"], conv1["final_iou"]) == (0, -30, 0.6, 0.62)
    assert conv1["natural_concept_step"] == 20 and conv1["natural_final_iou"] == 0.5
    assert conv1["margin"] == 0.15 and conv1["margin_sources"] == {"natural_spread": 0.15, "reprobe": None,
                                                                   "floor": 0.05}
    assert conv1["beyond_natural_step"] is None and conv1["beyond_natural_lag"] is None
    # conv2: >= 0.5 only at 50; the control barely moves (spread 0.03), so the margin is the floor 0.05 and the
    # gap (0, 0.07, 0.32, 0.45) stays above it from 10 (a fixed 0.1 margin would have said 20)
    assert conv2["margin"] == 0.05 and conv2["margin_sources"]["natural_spread"] == 0.03
    assert (conv2["concept_step"], conv2["lag"]) == (50, 20)
    assert (conv2["beyond_natural_step"], conv2["beyond_natural_lag"]) == (10, -20)
    assert conv2["natural_concept_step"] is None and conv2["natural_final_iou"] == 0.1
    # a re-probe difference larger than both raises the margin: conv2's gap counts from 20 only
    _, summary = over_time({"backdoored": backdoored, "natural": natural}, ("conv1", "conv2"),
                           reprobe={"conv2": 0.2})
    conv2 = summary["layers"]["conv2"]
    assert conv2["margin"] == 0.2 and conv2["margin_sources"]["reprobe"] == 0.2
    assert (conv2["beyond_natural_step"], conv2["beyond_natural_lag"]) == (20, -10)
    assert summary["layers"]["conv1"]["margin"] == 0.15  # no re-probe number for conv1: unchanged
    # without the control, no natural fields and no margin
    series, summary = over_time({"backdoored": backdoored}, ("conv1",))
    assert "natural" not in series[0]
    assert not {"beyond_natural_step", "margin"} & set(summary["layers"]["conv1"])
