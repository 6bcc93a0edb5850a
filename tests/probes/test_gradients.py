import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from anatomy_jax.models import create_model
from anatomy_jax.probes import flatten_per_example, gradient_alignment, model_loss_fn, per_example_grads, saliency_mass


def _batch(n=12, shape=(8, 8, 1)):
    x = jax.random.uniform(jax.random.key(0), (n, *shape))
    y = jnp.arange(n) % 10
    return x, y


@pytest.mark.parametrize("name", ["cnn", "mlp"])
def test_per_example_grads_equal_a_loop_over_single_examples(name):
    model = create_model(name, width=0.5)
    x, y = _batch()
    params = model.init(jax.random.key(1), x)["params"]
    loss_fn = model_loss_fn(model.apply)
    grads = jax.jit(per_example_grads, static_argnums=(0, 4))(loss_fn, params, x, y, None)
    single_grad = jax.jit(jax.grad(loss_fn))
    for i in range(len(y)):
        single = single_grad(params, x[i:i + 1], y[i:i + 1])
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a[i], b, rtol=1e-5, atol=1e-6), grads, single)
    for unroll in (False, True):  # a lax.map loop over padded chunks, or unrolled chunks: 12 = 5 + 5 + 2
        chunked = jax.jit(per_example_grads, static_argnums=(0, 4, 5, 6))(loss_fn, params, x, y, 5, None, unroll)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), grads, chunked)
    # The mean of per-example gradients is the batch gradient.
    batch = jax.grad(loss_fn)(params, x, y)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a.mean(0), b, rtol=1e-4, atol=1e-6), grads, batch)


def test_parameter_subset():
    model = create_model("cnn", width=0.5)
    x, y = _batch()
    params = model.init(jax.random.key(1), x)["params"]
    loss_fn = model_loss_fn(model.apply)
    full = per_example_grads(loss_fn, params, x, y)
    only = per_example_grads(loss_fn, params, x, y, keep=lambda path: path.startswith("conv2/"))
    assert only["conv1"]["Conv_0"]["kernel"] is None
    np.testing.assert_allclose(only["conv2"]["Conv_0"]["kernel"], full["conv2"]["Conv_0"]["kernel"], rtol=1e-5)


def test_logistic_regression_matches_closed_form():
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(20, 5)), jnp.float32)
    y = jnp.asarray(rng.integers(0, 2, 20), jnp.float32)
    w = jnp.asarray(rng.normal(size=5), jnp.float32)

    def loss_fn(w, x, y):
        z = x @ w
        return jnp.mean(jnp.logaddexp(0.0, z) - y * z)  # binary cross entropy with logits

    grads = per_example_grads(loss_fn, w, x, y, chunk_size=7)
    p = jax.nn.sigmoid(x @ w)
    np.testing.assert_allclose(grads, x * (p - y)[:, None], rtol=1e-5, atol=1e-6)


def _numpy_alignment(g, groups, k, update):
    out = {"mean_cosine": np.zeros((k, k)), "coherence": np.zeros(k)}
    sums = np.stack([g[groups == i].sum(0) for i in range(k)])
    means = np.stack([g[groups == i].mean(0) for i in range(k)])
    total = sums.sum(0)
    cos = lambda a, b: a @ b / (np.linalg.norm(a) * np.linalg.norm(b))
    for i, j in itertools.product(range(k), range(k)):
        out["mean_cosine"][i, j] = cos(means[i], means[j])
    for i in range(k):
        members = g[groups == i]
        out["coherence"][i] = np.mean([cos(members[a], members[b]) for a in range(len(members))
                                       for b in range(len(members)) if a != b])
    out["norm_share"] = np.linalg.norm(sums, axis=1) / np.linalg.norm(total)
    out["projection_share"] = sums @ total / (total @ total)
    d = -update
    out["update_share"] = sums @ d / (total @ d)
    out["mean_grad_norm"] = np.linalg.norm(means, axis=1)
    return out


def test_alignment_statistics_match_numpy():
    rng = np.random.default_rng(1)
    g = rng.normal(size=(30, 17)) + np.repeat(rng.normal(size=(3, 17)), 10, axis=0)
    groups = np.repeat(np.arange(3), 10)
    update = rng.normal(size=17)
    ours = gradient_alignment(jnp.asarray(g, jnp.float32), jnp.asarray(groups), 3, update=jnp.asarray(update))
    ref = _numpy_alignment(g, groups, 3, update)
    for key, value in ref.items():
        np.testing.assert_allclose(ours[key], value, rtol=2e-4, atol=1e-5, err_msg=key)
    assert float(ours["projection_share"].sum()) == pytest.approx(1.0, abs=1e-5)
    assert float(ours["update_share"].sum()) == pytest.approx(1.0, abs=1e-5)
    # The pytree path gives the same numbers as the flat matrix.
    tree = {"a": jnp.asarray(g[:, :7], jnp.float32), "b": jnp.asarray(g[:, 7:].reshape(30, 2, 5), jnp.float32)}
    from_tree = gradient_alignment(tree, jnp.asarray(groups), 3)
    np.testing.assert_allclose(from_tree["coherence"], ours["coherence"], rtol=1e-5)
    np.testing.assert_allclose(flatten_per_example(tree), g, rtol=1e-6)


def test_saliency_mass_inside_mask():
    x = jax.random.uniform(jax.random.key(0), (6, 8, 8, 1))
    y = jnp.arange(6) % 2
    mask = jnp.zeros((8, 8, 1)).at[5:, 5:].set(1.0)  # 9 of 64 pixels

    def reads_masked_pixels(params, x, y):  # logits depend only on pixels inside the mask
        s = (x * mask).sum(axis=(1, 2, 3))
        logits = jnp.stack([s * params, -s * params], axis=1)
        return -jax.nn.log_softmax(logits)[jnp.arange(len(y)), y].mean()

    inside = saliency_mass(reads_masked_pixels, 0.05, x, y, mask)
    np.testing.assert_allclose(inside["per_image"], 1.0, atol=1e-6)

    def reads_all_equally(params, x, y):
        s = x.sum(axis=(1, 2, 3))
        logits = jnp.stack([s * params, -s * params], axis=1)
        return -jax.nn.log_softmax(logits)[jnp.arange(len(y)), y].mean()

    even = saliency_mass(reads_all_equally, 0.01, x, y, mask)
    np.testing.assert_allclose(even["per_image"], 9 / 64, atol=1e-6)
