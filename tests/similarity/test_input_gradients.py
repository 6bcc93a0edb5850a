"""Input gradients: the closed form of a linear model, batching, and the saliency cosine against a
numpy reference with its invariances."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import softmax

from anatomy_jax.similarity.input_gradients import input_gradients, saliency_cosine, saliency_cosine_matrix

RNG = np.random.default_rng(0)
W = RNG.normal(size=(48, 5)).astype(np.float32)
B = RNG.normal(size=5).astype(np.float32)
IMAGES = RNG.uniform(size=(10, 4, 4, 3)).astype(np.float32)
LABELS = RNG.integers(0, 5, 10)


def linear(params, x):
    return x.reshape(x.shape[0], -1) @ params["w"] + params["b"]


def test_linear_model_gradient_is_the_closed_form():
    grads = input_gradients(lambda x: linear({"w": W, "b": B}, x), IMAGES, LABELS, batch_size=4)  # 4 + 4 + 2
    assert grads.shape == IMAGES.shape and grads.dtype == np.float32
    x = IMAGES.reshape(10, -1).astype(np.float64)
    p = softmax(x @ W + B, axis=1)
    expected = W.T[LABELS] - p @ W.T  # W_y - sum_k p_k W_k
    np.testing.assert_allclose(grads.reshape(10, -1), expected, atol=1e-5)
    # params as a jit argument gives the same numbers, and uint8 images are scaled to [0, 1]
    as_arg = input_gradients(linear, IMAGES, LABELS, params={"w": W, "b": B}, batch_size=3)
    np.testing.assert_allclose(as_arg, grads, atol=1e-6)
    u8 = (IMAGES * 255).round().astype(np.uint8)
    np.testing.assert_allclose(input_gradients(linear, u8, LABELS, params={"w": W, "b": B}),
                               input_gradients(linear, u8 / np.float32(255), LABELS, params={"w": W, "b": B}),
                               atol=1e-6)


def test_gradient_ignores_a_shift_shared_by_all_logits():
    params = {"w": W, "b": B}
    shifted = lambda p, x: linear(p, x) + 3.0 * jnp.sum(x.reshape(x.shape[0], -1) ** 2, axis=1, keepdims=True)
    np.testing.assert_allclose(input_gradients(shifted, IMAGES, LABELS, params=params),
                               input_gradients(linear, IMAGES, LABELS, params=params), atol=1e-5)


def test_registry_model_batched_gradients_are_per_example():
    from anatomy_jax.models import create_model

    model = create_model("cnn", num_classes=10, width=0.25)
    x = RNG.uniform(size=(5, 8, 8, 1)).astype(np.float32)
    y = RNG.integers(0, 10, 5)
    variables = model.init(jax.random.key(0), jnp.asarray(x))
    apply_fn = lambda v, z: model.apply(v, z)
    batched = input_gradients(apply_fn, x, y, params=variables, batch_size=2)
    one = jax.jit(jax.grad(lambda z, t: jax.nn.log_softmax(model.apply(variables, z))[0, t]))  # one image
    for i in range(5):
        np.testing.assert_allclose(batched[i:i + 1], one(jnp.asarray(x[i:i + 1]), y[i]), atol=1e-5)
    with pytest.raises(ValueError, match=r"labels must be in \[0, 10\)"):
        input_gradients(apply_fn, x, np.full(5, 10), params=variables)


def numpy_mean_cosine(a, b):
    a, b = a.reshape(len(a), -1).astype(np.float64), b.reshape(len(b), -1).astype(np.float64)
    cos = [u @ v / (np.linalg.norm(u) * np.linalg.norm(v)) for u, v in zip(a, b)
           if np.linalg.norm(u) > 0 and np.linalg.norm(v) > 0]
    return np.mean(cos)


def test_saliency_cosine_matches_numpy_and_its_invariances():
    a = RNG.normal(size=(20, 4, 4, 3)).astype(np.float32)
    b = (a + RNG.normal(size=a.shape)).astype(np.float32)
    assert saliency_cosine(a, a) == pytest.approx(1.0, abs=1e-6)
    assert saliency_cosine(a, -a) == pytest.approx(-1.0, abs=1e-6)
    assert saliency_cosine(a, b) == pytest.approx(numpy_mean_cosine(a, b), abs=1e-6)
    scale = RNG.uniform(0.1, 10.0, size=(20, 1, 1, 1)).astype(np.float32)  # positive, per image
    assert saliency_cosine(scale * a, b) == pytest.approx(saliency_cosine(a, b), abs=1e-6)
    a[[2, 7]] = 0.0  # zero gradients have no direction: left out, not counted as 0
    assert saliency_cosine(a, b) == pytest.approx(numpy_mean_cosine(a, b), abs=1e-6)
    assert saliency_cosine(a, a) == pytest.approx(1.0, abs=1e-6)
    assert np.isnan(saliency_cosine(np.zeros_like(a), b))
    with pytest.raises(ValueError, match="same shape"):
        saliency_cosine(a, b[:5])


def test_saliency_cosine_matrix_is_the_pairwise_cosine():
    grads = [RNG.normal(size=(12, 2, 2, 3)) for _ in range(3)]
    grads[2] = grads[0] + 0.5 * grads[2]
    mat = saliency_cosine_matrix(grads)
    assert mat.shape == (3, 3)
    np.testing.assert_allclose(mat, mat.T)
    np.testing.assert_allclose(np.diag(mat), 1.0, atol=1e-6)
    for i in range(3):
        for j in range(3):
            assert mat[i, j] == pytest.approx(numpy_mean_cosine(grads[i], grads[j]), abs=1e-6)
    assert mat[0, 2] > 0.7 > abs(mat[0, 1])
    with pytest.raises(ValueError, match="same shape"):
        saliency_cosine_matrix([grads[0], grads[1][:4]])
