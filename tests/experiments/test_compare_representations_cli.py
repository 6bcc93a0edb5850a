"""experiments/compare_representations.py: its building blocks, and a tiny zoo end to end."""

import json
import subprocess
import sys

import numpy as np
import pytest

from anatomy_jax.experiment.compare_representations import (METRICS, SYMMETRIC, CompareConfig, Net, layer_at_depth,
                                                            same_vs_cross, transfer_correlations)
from anatomy_jax.models import create_model
from tests.conftest import ROOT

SCRIPT = str(ROOT / "experiments" / "compare_representations.py")


def test_layer_at_depth_picks_the_stage_at_that_fraction_and_1_is_the_penultimate_layer():
    cnn = create_model("cnn").layer_names  # conv1, conv2, features, logits
    resnet = create_model("resnet18").layer_names  # stem, layer1..4, features, logits
    assert [layer_at_depth(cnn, d) for d in (0.1, 0.34, 0.5, 0.67, 1.0)] == ["conv1", "conv2", "conv2", "features",
                                                                            "features"]
    assert [layer_at_depth(resnet, d) for d in (0.01, 0.5, 0.51, 1.0)] == ["stem", "layer2", "layer3", "features"]


def _nets(archs):
    return [Net(f"{a}/{i}", a, i, None, {}, 1.0) for i, a in enumerate(archs)]


def test_same_vs_cross_architecture_means_over_ordered_pairs():
    nets = _nets(["a", "a", "b", "b"])
    m = np.arange(16, dtype=float).reshape(4, 4)
    result = same_vs_cross(nets, m, permutations=200)
    # a: same pairs (0,1),(1,0) -> 1, 4; cross pairs (0,2),(0,3),(1,2),(1,3),(2,0),(3,0),(2,1),(3,1)
    a = result["a"]
    assert (a["same"], a["cross"], a["same_pairs"], a["cross_pairs"]) == (2.5, np.mean([2, 3, 6, 7, 8, 12, 9, 13]), 2,
                                                                          8)
    assert a["difference"] == pytest.approx(a["same"] - a["cross"]) and 0 < a["p_value"] <= 1
    assert result["b"]["same"] == np.mean([11, 14])


def test_correlation_with_transfer_recovers_a_planted_relation_with_a_mantel_p_value():
    rng = np.random.default_rng(0)
    transfer = rng.uniform(size=(6, 6))
    both_ways = (transfer + transfer.T) / 2
    # symmetric metrics are compared on unordered pairs with the transfer of both directions averaged
    similarity = {metric: np.exp(3 * (both_ways if metric in SYMMETRIC else transfer)) for metric in METRICS}
    similarity["procrustes"] = -both_ways  # a distance: rho = -1
    similarity["pwcca"] = np.where(np.eye(6, dtype=bool), np.nan, transfer)
    similarity["pwcca"][0, 1] = np.nan  # undefined pairs are left out
    rho = transfer_correlations(similarity, transfer, permutations=500)
    assert rho["cka"]["spearman"] == pytest.approx(1.0) and rho["cka"]["pairs"] == 15 and rho["cka"]["unordered_pairs"]
    assert rho["r2"]["spearman"] == pytest.approx(1.0) and rho["r2"]["pairs"] == 30
    assert rho["procrustes"]["spearman"] == pytest.approx(-1.0)
    assert rho["pwcca"]["pairs"] == 29 and rho["pwcca"]["spearman"] == pytest.approx(1.0)
    assert all(rho[m]["p_value"] < 0.01 and rho[m]["test"] == "mantel" for m in ("cka", "r2", "procrustes"))
    noise = {metric: rng.uniform(size=(6, 6)) for metric in METRICS}
    assert transfer_correlations(noise, transfer, permutations=500)["r2"]["p_value"] > 0.05


def test_bad_settings_are_refused_and_the_cli_exits_with_a_message(tmp_path):
    for kwargs, message in ((dict(models=("cnn",), seeds=(0,)), "at least two nets"),
                            (dict(attack_norm="l3"), "unknown attack norm"),
                            (dict(models=("cnn", "transformer")), "unknown model")):
        with pytest.raises(ValueError, match=message):
            CompareConfig(**kwargs).validate()
    result = subprocess.run([sys.executable, SCRIPT, "--depths", "0.5,1.5", "--out", str(tmp_path / "x")],
                            capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert result.returncode == 2 and "depths must lie in (0, 1]" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "x").exists()


@pytest.mark.slow
def test_tiny_zoo_end_to_end_then_loaded_from_its_checkpoints(tmp_path, monkeypatch):
    zoo = tmp_path / "zoo"
    common = ["--models", "cnn,mlp", "--seeds", "0,1", "--width", "1", "--epochs", "6", "--eval-images", "200",
              "--fit-images", "600", "--attack-steps", "3", "--stitch-steps", "100"]
    first = subprocess.run([sys.executable, SCRIPT, *common, "--zoo", str(zoo), "--out", str(tmp_path / "a")],
                           capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert first.returncode == 0, first.stderr[-2000:]
    results = json.loads((tmp_path / "a" / "results.json").read_text())
    assert [n["name"] for n in results["nets"]] == ["cnn/0", "cnn/1", "mlp/0", "mlp/1"]
    accuracy = np.array([n["eval_accuracy"] for n in results["nets"]])
    assert accuracy.min() > 0.5, accuracy
    for figure in results["figures"]:
        assert (tmp_path / "a" / figure).stat().st_size > 5_000, figure
    assert len(results["figures"]) == 8 * 2 + 5  # 8 metrics x 2 depths, saliency, transfer, error, 2 summaries
    assert results["cka_estimator"] == "debiased" and len(results["claims"]) == 3
    for key, depth in results["depths"].items():
        m = {k: np.array(depth[k], dtype=float) for k in METRICS}
        assert all(v.shape == (4, 4) for v in m.values())
        np.testing.assert_allclose(m["cka"], m["cka"].T, atol=1e-6)
        np.testing.assert_allclose(np.diag(m["cka"]), 1.0)
        assert ((m["cka"] >= -1e-6) & (m["cka"] <= 1 + 1e-6)).all() and (m["r2"] <= 1 + 1e-6).all()
        np.testing.assert_allclose(np.diag(m["stitched_accuracy"]), accuracy)  # identity stitch = own accuracy
        off = ~np.eye(4, dtype=bool)
        # the trained stitch starts from the least-squares map and lowers the task loss: on held-out
        # images it is not worse on average (a few points of noise allowed per pair)
        conv = m["conv_stitched_accuracy"]  # the start of the trained stitch where both layers are conv maps
        base = np.where(np.isfinite(conv), conv, m["stitched_accuracy"])
        ok = np.isfinite(base) & off
        assert ok.any() and (m["trained_stitched_accuracy"][ok] >= base[ok] - 0.05).all(), (base, m)
        # a map between two seeds of the same net at its penultimate layer keeps most of the accuracy
        if key == "1":
            assert m["stitched_accuracy"][0, 1] >= accuracy[1] - 0.15 and m["r2"][0, 1] > 0.3, m
    transfer = np.array(results["adversarial"]["transfer"], dtype=float)
    assert np.allclose(np.diag(transfer), 1.0) and ((transfer >= 0) & (transfer <= 1)).all()
    assert set(results["depths"]["1"]["spearman_vs_transfer"]) == set(METRICS)

    # The zoo loads from its checkpoints (complete: no training step runs) and one entry agrees with
    # a recomputation from the loaded nets: linear CKA of cnn/0 and mlp/1 at the penultimate layer.
    from anatomy_jax.data import load_digits, subset
    from anatomy_jax.experiment import study
    from anatomy_jax.experiment.compare_representations import train_zoo
    from anatomy_jax.similarity import linear_cka, representations

    def loaded_only(trainer, states, data, *, steps, histories, **kwargs):
        assert int(np.asarray(states.step)[0]) == steps, "a complete zoo must load, not train"
        return states, histories

    monkeypatch.setattr(study, "train_sweep", loaded_only)
    config = CompareConfig(models=("cnn", "mlp"), seeds=(0, 1), width=1.0, epochs=6)
    data = load_digits()
    nets = train_zoo(config, data, zoo, progress=False)
    test = subset(data.test, 200)
    x, y = (representations(nets[k].model, nets[k].variables, test.images, ["features"])["features"] for k in (0, 3))
    assert float(linear_cka(x, y, debiased=True)) == pytest.approx(results["depths"]["1"]["cka"][0][3], abs=1e-5)
    assert [n.test_accuracy for n in nets] == [n["test_accuracy"] for n in results["nets"]]


def test_diverged_nets_are_left_out_not_a_crash(tmp_path, capsys):
    from anatomy_jax.experiment.compare_representations import run_compare

    config = CompareConfig(models=("cnn", "mlp"), seeds=(0,), epochs=1, learning_rate=1e5, schedule="constant")
    with pytest.raises(ValueError, match="fewer than two nets left to compare: cnn/0, mlp/0 diverged"):
        run_compare(config, tmp_path / "out", progress=False)
    assert "cnn seed 0 diverged at step" in capsys.readouterr().err
    # the default zoo: one folder of orbax steps per architecture under <out>/zoo, streamed status
    assert sorted(p.name for p in (tmp_path / "out" / "zoo").iterdir()) == ["cnn", "mlp"]
    assert not (tmp_path / "out" / "checkpoints").exists()
    streamed = json.loads((tmp_path / "out" / "results.json").read_text())
    assert [r["status"] for r in streamed["zoo"]["cnn"]] == ["diverged"]
