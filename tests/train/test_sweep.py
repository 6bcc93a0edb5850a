"""Sweeps: the strategy rule, equivalence with runs trained alone, divergence isolation, chunking."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from anatomy_jax.experiment.pattern_rate import (PatternRateConfig, load_study_data, make_trainer, prepare_run,
                                                 train_and_evaluate)
from anatomy_jax.train import (choose_strategy, make_sweep_mesh, pad_runs, per_run, place_states, stack_runs,
                               stack_trees, to_host, train_loop, train_sweep)

# Four runs: two pattern settings x a normal and a diverging learning rate.
CONFIG = PatternRateConfig(seeds=(0,), frequencies=(0.1,), correlations=(0.0, 1.0), learning_rates=(0.05, 1e4), steps=30,
                           eval_every=10, batch_size=64, width=0.5)
EVAL_KEYS = ("steps", "clean_accuracy", "attack_success_rate", "reliance", "test_loss", "diverged",
             "diverged_at_step")


def test_strategy_rule_is_deterministic_and_documented():
    assert choose_strategy("auto", "cpu", 1) == "loop"
    assert choose_strategy("auto", "gpu", 1) == choose_strategy("auto", "tpu", 1) == "vmap"
    assert choose_strategy("auto", "cpu", 8) == "vmap"
    assert choose_strategy("loop", "gpu", 1) == "loop" and choose_strategy("vmap", "cpu", 1) == "vmap"
    with pytest.raises(ValueError, match="loop strategy runs on one device"):
        choose_strategy("loop", "cpu", 2)
    with pytest.raises(ValueError, match="unknown sweep strategy"):
        choose_strategy("pmap", "cpu", 1)


@pytest.fixture(scope="module")
def alone_and_swept():
    """Each run of CONFIG trained alone with `train_loop`, and all of them as a sweep per strategy."""
    data = load_study_data(CONFIG)
    trainer = make_trainer(CONFIG, data)
    images = jnp.asarray(data.train.images)
    grid = CONFIG.grid()
    alone, raw = [], []
    for run in grid:
        run_data, _, state = prepare_run(CONFIG, trainer, data, images, run)
        state, history = train_loop(trainer, state, run_data, steps=CONFIG.steps, eval_every=CONFIG.eval_every)
        alone.append((jax.device_get(state.params), history))
        # independently of the sweep machinery: the trainer's own steps, in the same chunks
        run_data, _, state = prepare_run(CONFIG, trainer, data, images, run)
        for _ in range(CONFIG.steps // CONFIG.eval_every):
            state, _, _ = trainer.train_steps(state, run_data.images, run_data.plan, run_data.patterns,
                                              CONFIG.eval_every)
        raw.append(jax.device_get(state.params))
    mesh = make_sweep_mesh()
    swept = {}
    for strategy in ("loop", "vmap"):
        prepared = [prepare_run(CONFIG, trainer, data, images, run) for run in grid]
        states = place_states(stack_trees([p[2] for p in prepared]), strategy, mesh)
        seen = []
        states, histories = train_sweep(trainer, states, stack_runs([p[0] for p in prepared]), steps=CONFIG.steps,
                                        eval_every=CONFIG.eval_every, strategy=strategy, mesh=mesh,
                                        observers=[per_run([lambda s, st, m: seen.append((s, int(st.step)))] * 4)])
        swept[strategy] = (to_host(states.params), histories, seen)
    return alone, swept, raw


def test_loop_sweep_is_identical_to_runs_trained_alone(alone_and_swept):
    alone, swept, raw = alone_and_swept
    params, histories, seen = swept["loop"]
    for r, (alone_params, alone_history) in enumerate(alone):
        jax.tree.map(lambda a, b, r=r: np.testing.assert_array_equal(a[r], b), params, alone_params)
        assert histories[r] == alone_history
        if not alone_history["diverged"]:  # a diverged run stops early in the sweep
            jax.tree.map(lambda a, b, r=r: np.testing.assert_array_equal(a[r], b), params, raw[r])
    assert seen[:4] == [(10, 10)] * 4 and len(seen) == 4 * 3  # per_run: every run, every evaluation


def test_vmap_sweep_matches_runs_trained_alone(alone_and_swept):
    alone, swept, _ = alone_and_swept
    params, histories, _ = swept["vmap"]
    one_image = 1 / 360 + 1e-6
    for r, (alone_params, alone_history) in enumerate(alone):
        assert histories[r]["diverged"] == alone_history["diverged"]
        assert histories[r]["steps"] == alone_history["steps"]
        for a, b in zip(histories[r]["clean_accuracy"], alone_history["clean_accuracy"]):
            assert (a is None and b is None) or abs(a - b) <= one_image
        for key, tolerance in (("attack_success_rate", 1 / 300 + 1e-6), ("reliance", 1e-3)):
            for a, b in zip(histories[r][key], alone_history[key]):
                assert (a is None and b is None) or max(abs(x - y) for x, y in zip(a, b)) <= tolerance, (key, a, b)
        if not alone_history["diverged"]:
            def close(a, b, r=r):
                assert np.max(np.abs(a[r] - b)) <= 1e-5 * np.max(np.abs(b)) + 1e-7
            jax.tree.map(close, params, alone_params)


def test_diverging_run_is_marked_and_leaves_the_others_alone(alone_and_swept):
    alone, swept, _ = alone_and_swept
    for strategy in ("loop", "vmap"):
        _, histories, _ = swept[strategy]
        assert [h["diverged"] for h in histories] == [False, False, True, True]
        for h in histories[2:]:
            assert h["clean_accuracy"][-1] is None and h["diverged_at_step"] is not None
        assert all(a is not None and a > 0.3 for h in histories[:2] for a in h["clean_accuracy"][-1:])
    # the finite runs equal their solo runs (checked above), which trained without the diverging ones


def test_pad_runs_repeats_the_last_run():
    assert pad_runs([1, 2, 3], 4) == [1, 2, 3, 3] and pad_runs([1, 2], 2) == [1, 2]


def test_results_do_not_depend_on_chunking(tmp_path):
    config = dataclasses.replace(CONFIG, learning_rates=(0.05,), steps=20, checkpoint_every=0)
    whole = train_and_evaluate(config, tmp_path / "whole", progress=False)
    chunked = train_and_evaluate(dataclasses.replace(config, runs_per_device=1), tmp_path / "chunked",
                                 progress=False)
    assert whole["sweep"]["runs_per_chunk"] == 2 and chunked["sweep"]["runs_per_chunk"] == 1
    assert whole["sweep"]["strategy"] == chunked["sweep"]["strategy"] == "loop"
    assert chunked["sweep"]["num_chunks"] == 2 and whole["sweep"]["num_devices"] == 1
    strip = lambda runs: [{k: v for k, v in r.items() if k != "wall_time_s"} for r in runs]
    assert strip(whole["runs"]) == strip(chunked["runs"])
    vmapped = train_and_evaluate(dataclasses.replace(config, strategy="vmap", runs_per_device=1),
                                 tmp_path / "vmapped", progress=False)
    assert vmapped["sweep"]["strategy"] == "vmap"
    for a, b in zip(vmapped["runs"], whole["runs"]):
        assert np.allclose(a["clean_accuracy"], b["clean_accuracy"], atol=1 / 360 + 1e-6)


def test_fused_chunks_compile_once_whatever_their_length_and_match_single_steps():
    """Evaluations every 7 steps and checkpoints every 10 cut 40 steps into chunks of 7 different
    lengths; the fused loop (the GPU/TPU path, forced here) compiles one program for all of them."""
    import logging

    class Compiles(logging.Handler):
        def __init__(self):
            super().__init__()
            self.names = []

        def emit(self, record):
            message = record.getMessage()
            if message.startswith("Compiling jit("):
                self.names.append(message[len("Compiling jit("):].split(")")[0])

    config = dataclasses.replace(CONFIG, learning_rates=(0.05,), correlations=(1.0,), steps=40)
    data = load_study_data(config)
    base = make_trainer(config, data)
    images = jnp.asarray(data.train.images)
    mesh = make_sweep_mesh()
    finals = {}
    for name, trainer, strategy in (("single", dataclasses.replace(base, fuse_steps=False), "loop"),
                                    ("loop", dataclasses.replace(base, fuse_steps=True), "loop"),
                                    ("vmap", dataclasses.replace(base, fuse_steps=True), "vmap")):
        prepared = [prepare_run(config, trainer, data, images, run) for run in config.grid()]
        states = place_states(stack_trees([p.state for p in prepared]), strategy, mesh)
        compiles = Compiles()
        logging.getLogger("jax").addHandler(compiles)
        try:
            with jax.log_compiles(True):
                states, histories = train_sweep(trainer, states, stack_runs([p.data for p in prepared]), steps=40,
                                                eval_every=7, checkpoint_every=10, on_checkpoint=lambda *a: None,
                                                strategy=strategy, mesh=mesh)
        finally:
            logging.getLogger("jax").removeHandler(compiles)
        finals[name] = (to_host(states.params), histories)
        if name != "single":  # one training program for chunks of 7, 3, 4, 6, 1, 2 and 5 steps
            assert compiles.names.count("_fused_steps" if name == "loop" else "_vmapped_steps") == 1, compiles.names
    for name in ("loop", "vmap"):
        assert finals[name][1][0]["steps"] == finals["single"][1][0]["steps"] == [7, 14, 21, 28, 35, 40]
        np.testing.assert_allclose(finals[name][1][0]["train_loss"], finals["single"][1][0]["train_loss"], rtol=1e-5)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), finals[name][0],
                     finals["single"][0])


def test_vmapped_step_draws_the_epoch_order_in_a_branch():
    """Under vmap the permutation of the training set is computed only at an epoch's first step:
    the order comes out of a `cond`, not a `select` of a permutation drawn at every step."""
    from anatomy_jax.train.strategies import step_all

    data = load_study_data(CONFIG)
    trainer = make_trainer(CONFIG, data)
    images = jnp.asarray(data.train.images)
    prepared = [prepare_run(CONFIG, trainer, data, images, run) for run in CONFIG.grid()[:2]]
    states, sweep = stack_trees([p.state for p in prepared]), stack_runs([p.data for p in prepared])
    jaxpr = str(jax.make_jaxpr(lambda s: step_all(trainer, s, sweep.images, sweep.plans, sweep.patterns))(states))
    n = len(data.train)
    assert any(f"i32[2,{n}] = cond[" in line for line in jaxpr.splitlines()), "the order is not drawn in a branch"
    assert not any(f"i32[2,{n}] = select_n" in line for line in jaxpr.splitlines())


def test_a_diverging_run_leaves_the_vmapped_runs_beside_it_bitwise_unchanged(alone_and_swept):
    """The same stacked program with the two diverging runs replaced by finite ones: the first two
    runs' parameters and metrics are bitwise those of the sweep that contained the NaNs."""
    _, swept, _ = alone_and_swept
    config = dataclasses.replace(CONFIG, learning_rates=(0.05, 0.05))
    data = load_study_data(config)
    trainer = make_trainer(config, data)
    images = jnp.asarray(data.train.images)
    mesh = make_sweep_mesh()
    prepared = [prepare_run(config, trainer, data, images, run) for run in config.grid()]
    states = place_states(stack_trees([p.state for p in prepared]), "vmap", mesh)
    states, histories = train_sweep(trainer, states, stack_runs([p.data for p in prepared]), steps=config.steps,
                                    eval_every=config.eval_every, strategy="vmap", mesh=mesh)
    params = to_host(states.params)
    with_nans, nan_histories, _ = swept["vmap"]
    assert [h["diverged"] for h in histories] == [False] * 4 and nan_histories[2]["diverged"]
    for r in (0, 1):
        jax.tree.map(lambda a, b, r=r: np.testing.assert_array_equal(a[r], b[r]), params, with_nans)
        assert histories[r] == nan_histories[r]


@pytest.mark.parametrize("strategy", ["loop", "vmap"])
def test_schedules_are_run_state_so_one_sweep_trains_several(strategy):
    """A constant- and a step-schedule run in one sweep, on one trainer, equal each trained alone
    with its own schedule compiled as the trainer's default."""
    from anatomy_jax.experiment.study import sweep_config
    from anatomy_jax.train import batch_test_set, plan_run
    from anatomy_jax.train import make_trainer as trainer_for
    from anatomy_jax.train import prepare_run as build_run
    from anatomy_jax.train.config import train_config_of

    config = dataclasses.replace(CONFIG, learning_rates=(0.05,), correlations=(1.0,), steps=30)
    data = load_study_data(config)
    images = jnp.asarray(data.train.images)
    specs = [dataclasses.replace(config.run_specs(data.image_shape)[0],
                                 config=dataclasses.replace(train_config_of(config), schedule=s))
             for s in ("constant", "step")]
    test = batch_test_set(data.test.images, data.test.labels, 500)
    shared = trainer_for(sweep_config(specs[0].config), data)
    prepared = [build_run(shared, s, images, test, plan_run(s, data)) for s in specs]
    mesh = make_sweep_mesh()
    states = place_states(stack_trees([p.state for p in prepared]), strategy, mesh)
    states, histories = train_sweep(shared, states, stack_runs([p.data for p in prepared]), steps=30, eval_every=10,
                                    strategy=strategy, mesh=mesh)
    swept = to_host(states.params)
    for r, spec in enumerate(specs):
        own = trainer_for(spec.config, data)
        run = build_run(own, spec, images, test, plan_run(spec, data))
        state, history = train_loop(own, run.state, run.data, steps=30, eval_every=10)
        np.testing.assert_allclose(histories[r]["train_loss"], history["train_loss"], rtol=1e-5)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a[r], b, rtol=1e-4, atol=1e-6), swept,
                     jax.device_get(state.params))
    # the step schedule decays at steps 10 and 20: the two runs part ways after step 10
    assert histories[0]["train_loss"][0] == pytest.approx(histories[1]["train_loss"][0], rel=1e-6)
    assert histories[0]["train_loss"][-1] != pytest.approx(histories[1]["train_loss"][-1], rel=1e-3)
