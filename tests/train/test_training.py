"""Training on real data, determinism, checkpoint/resume equality and divergence handling."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from anatomy_jax.experiment.pattern_rate import PatternRateConfig, make_trainer, prepare_run, train_and_evaluate
from anatomy_jax.train import checkpoint_manager, schedule_shape, train_loop
from tests.conftest import TFDS_DIR

MNIST = dict(seeds=(0,), dataset="mnist", data_dir=str(TFDS_DIR), train_size=10000, model="cnn", patch_size=3,
             learning_rates=(0.05,), steps=500, eval_every=250, batch_size=128)


def _train(config, data, run):
    trainer = make_trainer(config, data)
    run_data, stats, state = prepare_run(config, trainer, data, jnp.asarray(data.train.images), run)
    state, history = train_loop(trainer, state, run_data, steps=config.steps, eval_every=config.eval_every)
    return history, stats


@pytest.fixture(scope="session")
def mnist_results(mnist):
    """Clean, (f=0.05, c=1) and (f=0.05, c=0) runs of the small CNN on 10,000 real MNIST images."""
    from anatomy_jax.data import subset

    config = PatternRateConfig(**MNIST)
    data = dataclasses.replace(mnist, train=subset(mnist.train, config.train_size))
    out = {}
    for name, f, c in (("clean", 0.0, 0.0), ("c1", 0.05, 1.0), ("c0", 0.05, 0.0)):
        out[name] = _train(config, data, {"learning_rate": 0.05, "frequency": f, "correlation": c, "seed": 0})
    return out


@pytest.mark.slow
def test_small_cnn_learns_mnist_and_the_pattern(mnist_results):
    clean, _ = mnist_results["clean"]
    c1, stats1 = mnist_results["c1"]
    c0, stats0 = mnist_results["c0"]
    assert stats1[0]["count"] == 500 and stats1[0]["realised_correlation"] == 1.0
    assert stats0[0]["realised_correlation"] == 0.0
    assert clean["clean_accuracy"][-1] >= 0.97
    assert c1["attack_success_rate"][-1][0] >= 0.95
    assert abs(c1["clean_accuracy"][-1] - clean["clean_accuracy"][-1]) <= 0.01
    assert c0["attack_success_rate"][-1][0] <= 0.05
    # The pattern carries weight only when it predicts the target.
    assert c1["reliance"][-1][0] > 5.0 > c0["reliance"][-1][0]


TINY = dict(seeds=(0,), frequencies=(0.1,), correlations=(1.0,), learning_rates=(0.05,), steps=60, eval_every=10,
            checkpoint_every=20, batch_size=64, width=0.5)


def _final_params(out):
    """(step, params) of the newest checkpoint, restored as saved (stacked runs of the last chunk)."""
    import orbax.checkpoint as ocp

    manager = checkpoint_manager(out / "checkpoints")
    step = manager.latest_step()
    restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
    return step, restored["state"]["params"]


def test_rerun_with_same_seed_is_identical(tmp_path):
    config = PatternRateConfig(**TINY)
    a = train_and_evaluate(config, tmp_path / "a", progress=False)
    b = train_and_evaluate(config, tmp_path / "b", progress=False)
    for key in ("clean_accuracy", "attack_success_rate", "reliance", "train_loss"):
        assert a["runs"][0][key] == b["runs"][0][key]
    _, pa = _final_params(tmp_path / "a")
    _, pb = _final_params(tmp_path / "b")
    jax.tree.map(np.testing.assert_array_equal, pa, pb)
    c = train_and_evaluate(dataclasses.replace(config, seeds=(1,)), tmp_path / "c", progress=False)
    assert c["runs"][0]["train_loss"] != a["runs"][0]["train_loss"]


class _Interrupt(Exception):
    pass


# Both runs in one chunk (loop strategy), stopped between checkpoints; one run per chunk (vmap
# strategy), stopped inside the second chunk. A resumed sweep keeps the strategy it started with.
@pytest.mark.parametrize("stop_at,runs_per_device,strategy", [(30, 0, "loop"), (90, 1, "vmap")])
def test_interrupted_grid_resumes_to_identical_results(tmp_path, stop_at, runs_per_device, strategy):
    config = PatternRateConfig(**{**TINY, "correlations": (0.0, 1.0), "runs_per_device": runs_per_device,
                                  "strategy": strategy})
    full = train_and_evaluate(config, tmp_path / "full", progress=False)

    seen = {"steps": 0}

    def interrupt(step, state, metrics):
        seen["steps"] += 10
        if seen["steps"] >= stop_at:
            raise _Interrupt

    with pytest.raises(_Interrupt):
        train_and_evaluate(config, tmp_path / "cut", observers=[interrupt], progress=False)
    with pytest.raises(ValueError, match="cannot resume.*learning_rates"):
        train_and_evaluate(dataclasses.replace(config, resume=True, learning_rates=(0.1,)), tmp_path / "cut",
                           progress=False)
    other = "vmap" if strategy == "loop" else "loop"
    with pytest.raises(ValueError, match=f"cannot resume: the sweep ran with strategy '{strategy}'"):
        train_and_evaluate(dataclasses.replace(config, resume=True, strategy=other), tmp_path / "cut",
                           progress=False)
    config = dataclasses.replace(config, strategy="auto")
    resumed = train_and_evaluate(dataclasses.replace(config, resume=True), tmp_path / "cut", progress=False)
    # the step within the run (checkpoints every 20 steps), and the chunk it belongs to
    assert resumed["resumed_from_step"] == 20 and resumed["resumed_from_chunk"] == (0 if stop_at == 30 else 1)
    assert resumed["sweep"]["strategy"] == strategy
    assert full["resumed_from_step"] is None
    strip = lambda runs: [{k: v for k, v in r.items() if k != "wall_time_s"} for r in runs]
    assert strip(resumed["runs"]) == strip(full["runs"])
    step_a, a = _final_params(tmp_path / "full")
    step_b, b = _final_params(tmp_path / "cut")
    assert step_a == step_b == (60 if strategy == "loop" else 120)  # last chunk's first run x 60 + 60
    jax.tree.map(np.testing.assert_array_equal, a, b)


def test_diverging_learning_rate_is_recorded_not_raised(tmp_path):
    config = PatternRateConfig(**{**TINY, "learning_rates": (0.05, 1e6)})
    results = train_and_evaluate(config, tmp_path, progress=False)
    ok, bad = results["runs"]
    assert not ok["diverged"] and ok["final_clean_accuracy"] > 0.5
    assert bad["diverged"] and bad["diverged_at_step"] is not None
    assert bad["final_clean_accuracy"] is None and None in bad["clean_accuracy"]
    text = (tmp_path / "results.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    # The diverged run leaves the other run unchanged.
    alone = train_and_evaluate(dataclasses.replace(config, learning_rates=(0.05,)), tmp_path / "alone",
                               progress=False)
    assert alone["runs"][0]["clean_accuracy"] == ok["clean_accuracy"]


def test_schedules_have_the_documented_shape():
    step = schedule_shape("step", 300)
    assert [float(step(i)) for i in (0, 99, 100, 199, 200, 299)] == pytest.approx([1, 1, .1, .1, .01, .01])
    cosine = schedule_shape("cosine", 100)
    assert float(cosine(0)) == 1.0 and float(cosine(50)) == pytest.approx(0.5) and float(cosine(100)) == 0.0
    warm = schedule_shape("constant", 100, warmup_steps=10)
    assert float(warm(0)) == 0.0 and float(warm(5)) == pytest.approx(0.5) and float(warm(50)) == 1.0
    with pytest.raises(ValueError, match="unknown schedule"):
        schedule_shape("exp", 10)


@pytest.mark.parametrize("steps, warmup", [(300, 0), (400, 0), (301, 20)])
def test_decay_steps_are_where_the_step_schedule_drops(steps, warmup):
    from anatomy_jax.train.optim import decay_steps

    shape = schedule_shape("step", steps, warmup_steps=warmup)
    values = np.asarray([float(shape(i)) for i in range(steps)])
    drops = [i for i in range(warmup + 1, steps) if values[i] < 0.5 * values[i - 1]]
    assert decay_steps("step", steps, warmup) == drops and len(drops) == 2
    assert decay_steps("constant", steps, warmup) == decay_steps("cosine", steps, warmup) == []


def test_learning_rate_is_state_so_one_compilation_serves_a_sweep():
    from anatomy_jax.data import load_digits

    config = PatternRateConfig(**TINY)
    data = load_digits()
    trainer = make_trainer(config, data)
    images = jnp.asarray(data.train.images)
    losses, compiled = [], []
    for lr in (0.01, 0.1):
        run_data, _, state = prepare_run(config, trainer, data, images, {**config.grid()[0], "learning_rate": lr})
        state, loss, _ = trainer.train_steps(state, images, run_data.plan, run_data.patterns, 5)
        losses.append(np.asarray(loss))
        compiled.append(trainer.step._cache_size())
    assert compiled[1] == compiled[0]  # the second learning rate reused the first one's program
    assert not np.allclose(losses[0][1:], losses[1][1:])


def test_batch_norm_model_with_augmentation_on_cifar(cifar10_exact):
    """The Trainer's batch-norm path (running statistics updated in the step) with crop + flip."""
    config = PatternRateConfig(seeds=(0,), model="preact_resnet18", width=0.125, frequencies=(0.1,), correlations=(1.0,),
                               learning_rates=(0.05,), steps=30, batch_size=64)
    data = dataclasses.replace(cifar10_exact, test=dataclasses.replace(
        cifar10_exact.test, images=cifar10_exact.test.images[:200], labels=cifar10_exact.test.labels[:200]))
    trainer = make_trainer(config, data)
    assert trainer.crop_padding == 4 and trainer.flip
    images = jnp.asarray(data.train.images)
    run_data, _, state = prepare_run(config, trainer, data, images, config.grid()[0])
    before = jax.device_get(state.batch_stats)
    state, history = train_loop(trainer, state, run_data, steps=30, eval_every=15)
    after = jax.device_get(state.batch_stats)
    changed = jax.tree.leaves(jax.tree.map(lambda a, b: not np.allclose(a, b), before, after))
    assert all(changed) and len(changed) > 10
    assert history["train_loss"][1] < history["train_loss"][0] and not history["diverged"]
    # the recorded accuracy is that of the final state in eval mode (running statistics), in numpy
    logits = trainer.model.apply({"params": state.params, "batch_stats": state.batch_stats},
                                 jnp.asarray(data.test.images, jnp.float32) / 255)
    expected = float((np.asarray(logits).argmax(1) == np.asarray(data.test.labels)).mean())
    assert history["clean_accuracy"][-1] == pytest.approx(expected, abs=1e-6)


def test_bfloat16_mixed_precision_keeps_parameters_and_logits_in_float32():
    from anatomy_jax.data import load_digits
    from anatomy_jax.train import TrainConfig
    from anatomy_jax.train import make_trainer as trainer_of

    data = load_digits()
    config = PatternRateConfig(**{**TINY, "dtype": "bfloat16", "steps": 30})
    trainer = trainer_of(TrainConfig(model="cnn", width=0.5, dtype="bfloat16", steps=30, batch_size=64), data)
    run_data, _, state = prepare_run(config, trainer, data, jnp.asarray(data.train.images), config.grid()[0])
    state, history = train_loop(trainer, state, run_data, steps=30, eval_every=10)
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(state.params))
    assert all(v.dtype == jnp.float32 for v in jax.tree.leaves(state.opt_state) if hasattr(v, "dtype")
               and jnp.issubdtype(v.dtype, jnp.floating))
    x = jnp.asarray(data.test.images[:4], jnp.float32) / 255
    logits, reps = trainer.model.apply({"params": state.params}, x, capture=True)
    assert logits.dtype == jnp.float32 and reps["conv1"].dtype == jnp.bfloat16
    # it trains like float32: the same run in float32 reaches nearly the same loss
    f32 = trainer_of(TrainConfig(model="cnn", width=0.5, steps=30, batch_size=64), data)
    run_data, _, state = prepare_run(config, f32, data, jnp.asarray(data.train.images), config.grid()[0])
    _, reference = train_loop(f32, state, run_data, steps=30, eval_every=10)
    assert history["train_loss"] == pytest.approx(reference["train_loss"], rel=0.02)
    assert history["train_loss"][-1] < 0.85 * history["train_loss"][0]
    assert trainer_of(TrainConfig(model="cnn", width=0.5, dtype="bfloat16", steps=30, batch_size=64), data) is trainer


@pytest.mark.parametrize("strategy", ["loop", "vmap"])
def test_train_and_evaluate_twice_compiles_no_training_step_again(tmp_path, strategy):
    import logging

    # a width no other test uses: its trainer and programs are new to this worker
    config = PatternRateConfig(**{**TINY, "steps": 20, "strategy": strategy, "seeds": (0, 1), "width": 0.375})

    class Compiles(logging.Handler):
        def __init__(self):
            super().__init__()
            self.names = []

        def emit(self, record):
            if record.getMessage().startswith("Compiling jit("):
                self.names.append(record.getMessage()[len("Compiling jit("):].split(")")[0])

    def compiled_by(out):
        handler = Compiles()
        logging.getLogger("jax").addHandler(handler)
        try:
            with jax.log_compiles(True):
                train_and_evaluate(config, out, progress=False)
        finally:
            logging.getLogger("jax").removeHandler(handler)
        return set(handler.names)

    training = {"loop": {"step", "_evaluate_run"}, "vmap": {"_vmapped_steps", "_vmapped_eval"}}[strategy]
    first, second = compiled_by(tmp_path / "a"), compiled_by(tmp_path / "b")
    assert training <= first, first  # the strategy's programs compile on the first call (the check is not vacuous)
    assert not training & second, second
