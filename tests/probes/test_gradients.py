import itertools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from anatomy_jax.models import create_model
from anatomy_jax.probes import (alignment_statistics, alignment_sums, flatten_per_example, gradient_alignment,
                                layer_order, model_loss_fn, per_example_grads, saliency_mass)


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


def _numpy_alignment(g, groups, k, update, w):
    """An independent weighted implementation: explicit weighted means and pairs."""
    out = {"mean_cosine": np.zeros((k, k)), "mean_pairwise_cosine": np.zeros(k), "coherence": np.zeros(k)}
    sums = np.stack([(w[groups == i, None] * g[groups == i]).sum(0) for i in range(k)])
    means = np.stack([np.average(g[groups == i], axis=0, weights=w[groups == i]) for i in range(k)])
    total = sums.sum(0)
    cos = lambda a, b: a @ b / (np.linalg.norm(a) * np.linalg.norm(b))
    for i, j in itertools.product(range(k), range(k)):
        out["mean_cosine"][i, j] = cos(means[i], means[j])
    for i in range(k):
        members, wi = g[groups == i], w[groups == i]
        out["mean_pairwise_cosine"][i] = np.mean([cos(members[a], members[b]) for a in range(len(members))
                                                  for b in range(len(members)) if a != b])
        out["coherence"][i] = means[i] @ means[i] / np.average((members ** 2).sum(1), weights=wi)
    grouped = groups >= 0
    mean_all = np.average(g[grouped], axis=0, weights=w[grouped])
    out["coherence_overall"] = mean_all @ mean_all / np.average((g[grouped] ** 2).sum(1), weights=w[grouped])
    out["norm_share"] = np.linalg.norm(sums, axis=1) / np.linalg.norm(total)
    out["projection_share"] = sums @ total / (total @ total)
    d = -update
    out["update_share"] = sums @ d / (total @ d)
    out["mean_grad_norm"] = np.linalg.norm(means, axis=1)
    out["count"] = np.array([(groups == i).sum() for i in range(k)])
    out["weight"] = np.array([w[groups == i].sum() for i in range(k)])
    return out


def _grads(seed=1, n=30, d=17, k=3):
    rng = np.random.default_rng(seed)
    g = rng.normal(size=(n, d)) + np.repeat(rng.normal(size=(k, d)), n // k, axis=0)
    return rng, g, np.repeat(np.arange(k), n // k)


@pytest.mark.parametrize("weighted", [False, True])
def test_alignment_statistics_match_numpy(weighted):
    rng, g, groups = _grads()
    groups[-2:] = -1  # ignored examples
    update = rng.normal(size=17)
    w = rng.uniform(0.1, 3.0, size=30) if weighted else np.ones(30)
    ours = gradient_alignment(jnp.asarray(g, jnp.float32), jnp.asarray(groups), 3, update=jnp.asarray(update),
                              weights=jnp.asarray(w, jnp.float32) if weighted else None)
    ref = _numpy_alignment(g, groups, 3, update, w)
    for key, value in ref.items():
        np.testing.assert_allclose(ours[key], value, rtol=2e-4, atol=1e-5, err_msg=key)
    # Weighted shares still split the whole: projection and update shares sum to 1.
    assert float(ours["projection_share"].sum()) == pytest.approx(1.0, abs=1e-5)
    assert float(ours["update_share"].sum()) == pytest.approx(1.0, abs=1e-5)
    # The pytree path gives the same numbers as the flat matrix.
    tree = {"a": jnp.asarray(g[:, :7], jnp.float32), "b": jnp.asarray(g[:, 7:].reshape(30, 2, 5), jnp.float32)}
    from_tree = gradient_alignment(tree, jnp.asarray(groups), 3, weights=jnp.asarray(w, jnp.float32))
    np.testing.assert_allclose(from_tree["coherence"], ours["coherence"], rtol=1e-5)
    np.testing.assert_allclose(flatten_per_example(tree), g, rtol=1e-6)


def test_coherence_closed_forms():
    rng = np.random.default_rng(0)
    v = rng.normal(size=12)
    q, _ = np.linalg.qr(rng.normal(size=(12, 5)))  # 5 orthonormal columns
    blocks = [
        np.tile(v, (4, 1)),  # group 0: identical gradients -> 1
        np.concatenate([v[None], -v[None], 2 * v[None], -2 * v[None]]),  # group 1: pairs g, -g -> 0
        3.0 * q.T,  # group 2: 5 orthogonal gradients of equal norm -> 1/5
        np.zeros((3, 12)),  # group 3: all-zero gradients -> 0, no NaN
    ]  # group 4: empty -> 0
    g = jnp.asarray(np.concatenate(blocks), jnp.float32)
    groups = jnp.asarray(np.repeat(np.arange(4), [len(b) for b in blocks]))
    out = gradient_alignment(g, groups, 5, update=jnp.ones(12))
    np.testing.assert_allclose(out["coherence"], [1.0, 0.0, 0.2, 0.0, 0.0], atol=1e-6)
    np.testing.assert_allclose(out["mean_pairwise_cosine"][:3], [1.0, -1 / 3, 0.0], atol=1e-6)
    assert out["mean_pairwise_cosine"][3] == 0.0  # zero gradients have cosine 0 with everything
    for key, value in out.items():
        assert np.isfinite(np.asarray(value)).all(), key
    # alpha over everything = ||E g||^2 / E ||g||^2 of the grouped examples
    flat = np.asarray(g, np.float64)
    expected = np.sum(flat.mean(0) ** 2) / np.mean(np.sum(flat ** 2, 1))
    assert float(out["coherence_overall"]) == pytest.approx(expected, rel=1e-5)
    # Nothing but zero gradients: every statistic is finite, coherence 0.
    zeros = gradient_alignment(jnp.zeros((4, 3)), jnp.asarray([0, 0, 1, 1]), 2, update=jnp.zeros(3))
    assert all(np.isfinite(np.asarray(x)).all() for x in zeros.values())
    assert float(zeros["coherence_overall"]) == 0.0 and np.all(np.asarray(zeros["coherence"]) == 0.0)


def test_weighting_an_example_by_two_equals_duplicating_it():
    rng, g, groups = _grads(seed=3, n=12, d=9)
    update = jnp.asarray(rng.normal(size=9), jnp.float32)
    w = np.ones(12)
    w[[0, 1, 5]] = 2.0
    dup = np.concatenate([np.arange(12), [0, 1, 5]])
    weighted = gradient_alignment(jnp.asarray(g, jnp.float32), jnp.asarray(groups), 3, update=update,
                                  weights=jnp.asarray(w, jnp.float32))
    duplicated = gradient_alignment(jnp.asarray(g[dup], jnp.float32), jnp.asarray(groups[dup]), 3, update=update)
    for key in ("weight", "coherence", "coherence_overall", "norm_share", "projection_share", "update_share",
                "update_cosine", "mean_grad_norm", "mean_cosine"):
        np.testing.assert_allclose(weighted[key], duplicated[key], rtol=1e-5, atol=1e-6, err_msg=key)
    np.testing.assert_allclose(weighted["count"], [4, 4, 4])  # counts stay unweighted
    np.testing.assert_allclose(duplicated["count"], [6, 5, 4])
    # Scaling every weight changes nothing but `weight`.
    scaled = gradient_alignment(jnp.asarray(g, jnp.float32), jnp.asarray(groups), 3, update=update,
                                weights=jnp.asarray(0.1 * w, jnp.float32))
    for key in ("coherence", "projection_share", "update_share", "mean_grad_norm"):
        np.testing.assert_allclose(scaled[key], weighted[key], rtol=1e-5, atol=1e-6, err_msg=key)


def test_alignment_sums_add_over_chunks():
    _, g, groups = _grads(seed=4)
    w = jnp.linspace(0.5, 2.0, 30)
    g, groups = jnp.asarray(g, jnp.float32), jnp.asarray(groups)
    whole = alignment_sums(g, groups, 3, w)
    parts = [alignment_sums(g[a:b], groups[a:b], 3, w[a:b]) for a, b in ((0, 7), (7, 20), (20, 30))]
    summed = jax.tree.map(lambda *xs: sum(xs), *parts)
    chex.assert_trees_all_close(summed, whole, rtol=1e-5, atol=1e-5)
    chex.assert_trees_all_close(alignment_statistics(summed), gradient_alignment(g, groups, 3, weights=w),
                                rtol=1e-5, atol=1e-6)


def test_layer_order_follows_the_computation_not_the_path():
    # The MLP's first hidden layer is "hidden1", its second "features": sorted paths would invert them.
    model = create_model("mlp", width=0.5)
    x, y = _batch()
    params = jax.eval_shape(model.init, jax.random.key(0), x)["params"]
    assert layer_order(model_loss_fn(model.apply), params, x, y) == ("hidden1/Dense_0", "features/Dense_0",
                                                                     "logits/Dense_0")
    cnn = create_model("cnn", width=0.5)
    params = jax.eval_shape(cnn.init, jax.random.key(0), x)["params"]
    order = layer_order(model_loss_fn(cnn.apply), params, x, y)
    assert order[0] == "conv1/Conv_0" and order[-1] == "logits/Dense_0"


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
