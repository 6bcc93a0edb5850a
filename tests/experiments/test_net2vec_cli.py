"""experiments/net2vec.py end to end at a tiny size: the results.json schema, the figures, resume and bad flags."""

from __future__ import annotations

import json

import pytest

from anatomy_jax.experiment.cli import run_main
from anatomy_jax.experiment.net2vec import Net2VecConfig, format_summary, run_net2vec

TINY = ["--steps", "40", "--eval-every", "20", "--train-size", "300", "--test-size", "100", "--concept-images", "120",
        "--probe-steps", "10", "--probe-batch-size", "16"]


def _main(argv):
    return run_main(Net2VecConfig, "net2vec", lambda c, out: run_net2vec(c, out, progress=False), format_summary,
                    "net2vec", argv=argv)


def test_net2vec_cli_writes_the_schema(tmp_path, capsys):
    out = tmp_path / "run"
    assert _main(TINY + ["--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    assert set(results["layers"]) == {"conv1", "conv2"}
    assert "planted" in results["concepts"] and "ink" in results["concepts"]
    for by_layer in results["concepts"].values():
        for v in by_layer.values():
            assert {"single_filter_iou", "combination_iou", "filters_for_90", "ap"} <= set(v)
            for key in ("single_filter_iou", "combination_iou"):
                assert v[key] is None or 0.0 <= v[key] <= 1.0
            assert v["filters_for_90"] is None or 1 <= v["filters_for_90"] <= v["num_filters"]
    # step 0 (the untrained net) and every evaluation (2 <= --track-points); the natural control beside them
    assert [p["step"] for p in results["over_time"]] == [0, 20, 40]
    assert set(results["over_time"][0]["layers"]) == {"conv1", "conv2"}
    assert set(results["over_time"][0]["natural"]["layers"]) == {"conv1", "conv2"}
    assert results["over_time"][0]["layers"] == results["over_time"][0]["natural"]["layers"]  # one initialisation
    assert results["curves"]["backdoored"]["steps"] == [0, 20, 40]
    for name in ("natural", "untrained"):
        for v in results["control"][name]["planted"].values():
            assert {"single_filter_iou", "combination_iou", "filters_for_90", "ap"} <= set(v)
    assert set(results["control"]["natural"]["planted"]) == {"conv1", "conv2"}
    assert results["models"]["natural"]["trigger_asr"] is not None
    # beyond the controls: per layer the backdoored planted IoU minus the larger of natural and untrained
    beyond = results["checks"]["planted_beyond_controls"]
    assert beyond["controls"] == ["untrained", "natural"] and set(beyond["layers"]) == {"conv1", "conv2"}
    for layer, gap in beyond["layers"].items():
        b = results["concepts"]["planted"][layer]["combination_iou"]
        others = [results["control"][n]["planted"][layer]["combination_iou"] for n in ("natural", "untrained")]
        assert gap == pytest.approx(b - max(others), abs=1e-9)
    assert beyond["best"] == max(beyond["layers"].values()) == beyond["layers"][beyond["best_layer"]]
    # the over-time margin per layer: the larger of the floor, the natural control's spread over its tracked
    # steps and the re-probe difference of the final states (final analysis vs the tracker's last point)
    last = results["over_time"][-1]
    for layer, row in results["over_time_summary"]["layers"].items():
        natural = [p["natural"]["layers"][layer]["combination_iou"] for p in results["over_time"]]
        natural = [v for v in natural if v is not None]
        reprobe = max(abs(results["concepts"]["planted"][layer]["combination_iou"]
                          - last["layers"][layer]["combination_iou"]),
                      abs(results["control"]["natural"]["planted"][layer]["combination_iou"]
                          - last["natural"]["layers"][layer]["combination_iou"]))
        assert row["margin"] == pytest.approx(max(0.05, max(natural) - min(natural), reprobe), abs=1e-4)
        assert row["margin_sources"]["reprobe"] == pytest.approx(reprobe, abs=1e-4)
    names = results["embeddings"]["names"]
    cos = results["embeddings"]["cosine"]["conv1"]
    assert len(cos) == len(names) and all(abs(cos[i][i] - 1) < 1e-6 for i in range(len(names))
                                          if any(abs(x) > 0 for x in cos[i]))
    for figure in ("concept_iou.png", "concept_embeddings.png", "concept_over_time.png"):
        assert (out / figure).stat().st_size > 0
    printed = capsys.readouterr().out
    assert "planted pattern" in printed and "beyond controls" in printed and "noise margin" in printed
    # an existing --out is refused without --resume / --overwrite; --resume loads the finished run
    with pytest.raises(SystemExit) as e:
        _main(TINY + ["--out", str(out)])
    assert e.value.code == 2
    assert _main(TINY + ["--out", str(out), "--resume"]) == 0
    again = json.loads((out / "results.json").read_text())
    assert again["concepts"] == results["concepts"] and again["over_time"] == results["over_time"]


@pytest.mark.parametrize("flags, message", [(["--frequency", "0"], "frequency"), (["--pattern", "blend"], "patch"),
                                            (["--quantile", "2"], "quantile"), (["--probe-inputs", "x"], "inputs")])
def test_net2vec_cli_rejects_bad_flags(flags, message, capsys):
    with pytest.raises(SystemExit) as e:
        _main(flags)
    assert e.value.code == 2
    assert message in capsys.readouterr().err
