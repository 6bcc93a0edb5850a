import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from anatomy_jax.models import MODEL_NAMES, create_model


@pytest.mark.parametrize("name", MODEL_NAMES)
@pytest.mark.parametrize("shape", [(2, 8, 8, 1), (2, 32, 32, 3)])
def test_output_and_intermediate_shapes(name, shape):
    model = create_model(name, num_classes=7, width=0.25)
    x = jnp.zeros(shape)
    variables = jax.eval_shape(lambda: model.init(jax.random.key(0), x))
    logits, reps = jax.eval_shape(lambda v: model.apply(v, x, capture=True), variables)
    assert logits.shape == (2, 7)
    assert set(reps) == set(model.layer_names)
    assert model.layer_names[-2:] == ("features", "logits")
    assert reps["features"].ndim == 2 and reps["features"].shape[0] == 2
    # Parameters live under the stage names, so layer order is known without sorting keys.
    assert set(variables["params"]) <= set(model.layer_names)
    # Running on from any named representation reproduces the logits' shape.
    for layer in model.layer_names[:-1]:
        out = jax.eval_shape(lambda v, h: model.apply(v, h, start_after=layer), variables, reps[layer])
        assert out.shape == (2, 7)


def test_width_scales_channels():
    narrow = create_model("resnet18", width=0.25)
    wide = create_model("resnet18", width=0.5)
    x = jnp.zeros((1, 8, 8, 1))
    count = lambda m: sum(p.size for p in jax.tree.leaves(jax.eval_shape(lambda: m.init(jax.random.key(0), x))))
    assert 3.0 < count(wide) / count(narrow) < 4.5  # conv parameters grow with width squared


def test_start_after_continues_exactly():
    model = create_model("cnn", width=0.5)
    x = jax.random.uniform(jax.random.key(0), (4, 8, 8, 1))
    variables = model.init(jax.random.key(1), x)
    logits, reps = model.apply(variables, x, capture=True)
    for layer in ("conv1", "conv2", "features"):
        np.testing.assert_allclose(model.apply(variables, reps[layer], start_after=layer), logits, rtol=1e-6)
    with pytest.raises(ValueError, match="unknown layer"):
        model.apply(variables, x, start_after="conv9")


def test_unknown_model_and_bad_width():
    with pytest.raises(ValueError, match="unknown model"):
        create_model("resnet1000")
    with pytest.raises(ValueError, match="width must be > 0"):
        create_model("cnn", width=0)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_a_few_steps_lower_the_loss_on_a_fixed_batch(name):
    from anatomy_jax.data import load_digits

    digits = load_digits()
    model = create_model(name, num_classes=10, width=0.25)
    x = jnp.asarray(digits.train.images[:32], jnp.float32) / 255.0
    y = jnp.asarray(digits.train.labels[:32])
    variables = model.init(jax.random.key(1), x)
    params, stats = variables["params"], variables.get("batch_stats", {})
    tx = optax.adam(1e-2)

    def loss_fn(p, s):
        if s:
            logits, new = model.apply({"params": p, "batch_stats": s}, x, train=True, mutable=["batch_stats"])
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), new["batch_stats"]
        return optax.softmax_cross_entropy_with_integer_labels(model.apply({"params": p}, x), y).mean(), s

    @jax.jit
    def train(p, s):
        def body(carry, _):
            p, s, o = carry
            (loss, s), g = jax.value_and_grad(loss_fn, has_aux=True)(p, s)
            u, o = tx.update(g, o, p)
            return (optax.apply_updates(p, u), s, o), loss
        _, losses = jax.lax.scan(body, (p, s, tx.init(p)), None, length=20)
        return losses

    losses = np.asarray(train(params, stats))
    assert np.isfinite(losses).all()
    assert losses[-1] < 0.7 * losses[0], losses
