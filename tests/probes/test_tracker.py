import jax
import jax.numpy as jnp
import numpy as np

from anatomy_jax.experiment.pattern_rate import PatternRateConfig, load_study_data, make_trainer, prepare_run
from anatomy_jax.probes import GradientProbe
from anatomy_jax.train import train_loop


def test_probes_do_not_change_training_and_record_sane_values():
    config = PatternRateConfig(frequencies=(0.1,), correlations=(1.0,), learning_rates=(0.05,), steps=40,
                               batch_size=64)
    data = load_study_data(config)
    trainer = make_trainer(config, data)
    images = jnp.asarray(data.train.images)
    finals = []
    for with_probe in (False, True):
        run_data, _, state = prepare_run(config, trainer, data, images, config.grid()[0])
        probe = GradientProbe(trainer, run_data, jax.random.key(0), probe_size=64, saliency_size=32, chunk_size=16)
        state, _ = train_loop(trainer, state, run_data, steps=40, eval_every=20,
                              observers=[probe] if with_probe else [])
        finals.append(jax.device_get(state.params))
    jax.tree.map(np.testing.assert_array_equal, *finals)
    assert [r["step"] for r in probe.records()] == [20, 40]
    last = probe.records()[-1]
    assert last["count"] == [32.0, 32.0, 0.0]  # c = 1: every patterned probe image carries the target label
    assert abs(sum(last["projection_share"]) - 1.0) < 1e-4 and abs(sum(last["update_share"]) - 1.0) < 1e-4
    assert 0.0 < last["saliency_mass"] < 1.0
