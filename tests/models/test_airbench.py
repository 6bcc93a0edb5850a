import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from anatomy_jax.models.airbench import (Airbench94, image_patches, init_whitening, max_pool_floor, param_labels,
                                         whitening_bias, whitening_kernel)
from tests.conftest import CIFAR_DIR


@pytest.fixture(scope="module")
def cifar_images():
    """1,000 pixel-exact CIFAR-10 training images in [0, 1] and their labels."""
    with np.load(CIFAR_DIR / "train_exact.npz", allow_pickle=False) as d:
        return d["x"][:1000].astype(np.float32) / 255.0, d["y"][:1000].astype(np.int32)


@pytest.fixture(scope="module")
def small_net():
    """airbench94 at width 0.25 and its initial variables (a jitted init: eager init costs ~7 s on CPU)."""
    model = Airbench94(width=0.25)
    return model, jax.jit(model.init)(jax.random.key(0), jnp.zeros((8, 32, 32, 3)))


def _numpy_patch_covariance(images, k=2):
    x = np.asarray(images, np.float64)
    n, h, w, c = x.shape
    p = np.stack([x[:, i:h - k + 1 + i, j:w - k + 1 + j, :] for i in range(k) for j in range(k)], axis=3)
    p = p.reshape(-1, k * k * c)
    return p, np.cov(p, rowvar=False, bias=True)


@pytest.mark.parametrize("shape,spatial", [((2, 32, 32, 3), (31, 15, 7, 3)), ((2, 8, 8, 1), (7, 3, 1, 1))])
def test_shapes_and_named_representations(shape, spatial):
    model = Airbench94(num_classes=10, width=0.25)
    x = jnp.zeros(shape)
    variables = jax.eval_shape(lambda: model.init(jax.random.key(0), x))
    logits, reps = jax.eval_shape(lambda v: model.apply(v, x, capture=True), variables)
    assert model.layer_names == ("whiten", "group1", "group2", "group3", "features", "logits")
    assert set(reps) == set(model.layer_names) and set(variables["params"]) <= set(model.layer_names)
    c = shape[-1]
    assert reps["whiten"].shape == (2, spatial[0], spatial[0], 2 * c * 4)  # 24 channels for RGB, as airbench
    widths = (16, 64, 64)  # 64, 256, 256 x 0.25
    for i, (s, w) in enumerate(zip(spatial[1:], widths)):
        assert reps[f"group{i + 1}"].shape == (2, s, s, w)
    assert reps["features"].shape == (2, 64) and logits.shape == (2, 10)
    # airbench's batch norm: a bias, no scale; the linear layer has no bias
    assert set(variables["params"]["group1"]["BatchNorm_0"]) == {"bias"}
    assert set(variables["params"]["logits"]["Dense_0"]) == {"kernel"}
    for layer in model.layer_names[:-1]:
        out = jax.eval_shape(lambda v, h: model.apply(v, h, start_after=layer), variables, reps[layer])
        assert out.shape == (2, 10)


def test_full_width_parameter_count_is_airbench94s():
    # airbench94: whiten 3*4*24 + 24, groups 9*(24*64 + 64*64 + 64*256 + 256*256 + 256*256 + 256*256),
    # BN biases 2*(64+256+256), linear 256*10
    model = Airbench94()
    variables = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3))))
    count = sum(p.size for p in jax.tree.leaves(variables["params"]))
    convs = 9 * (24 * 64 + 64 * 64 + 64 * 256 + 256 * 256 + 256 * 256 + 256 * 256)
    assert count == 3 * 4 * 24 + 24 + convs + 2 * (64 + 256 + 256) + 256 * 10
    labels = jax.tree.leaves(param_labels(variables["params"]))
    assert sorted(set(labels)) == ["norm_bias", "other", "whiten_bias", "whiten_kernel"]
    assert labels.count("norm_bias") == 6 and labels.count("whiten_kernel") == 1
    assert model.layer_groups(["whiten/kernel", "group1/Conv_0/kernel", "group3/BatchNorm_1/bias",
                               "logits/Dense_0/kernel"]) == ["stem", "block1", "block3", "classifier"]


def test_max_pool_floors_like_pytorch_and_keeps_a_single_pixel():
    x = jax.random.normal(jax.random.key(0), (2, 7, 5, 3))
    xn = np.asarray(x)
    ref = xn[:, :6, :4].reshape(2, 3, 2, 2, 2, 3).max(axis=(2, 4))
    np.testing.assert_array_equal(max_pool_floor(x), ref)
    one = jnp.ones((1, 1, 1, 4))
    assert max_pool_floor(one).shape == (1, 1, 1, 4)


def test_whitened_patches_have_identity_covariance_up_to_eps(cifar_images):
    images, _ = cifar_images
    p, cov = _numpy_patch_covariance(images)
    lam = np.linalg.eigvalsh(cov)[::-1]
    centred = p - p.mean(axis=0)
    for eps in (5e-4, 0.0):
        kernel = np.asarray(whitening_kernel(images, 2, eps), np.float64)
        assert kernel.shape == (2, 2, 3, 24)
        w = kernel.reshape(12, 24)
        np.testing.assert_allclose(w[:, 12:], -w[:, :12])  # the negated copy
        out = centred @ w[:, :12]
        got = out.T @ out / len(out)
        # closed form: diag(lambda / (lambda + eps)), eigenvalues descending
        np.testing.assert_allclose(got, np.diag(lam / (lam + eps)), atol=2e-3)
    np.testing.assert_allclose(got, np.eye(12), atol=2e-3)  # eps 0: the identity
    assert lam[-1] / lam[0] < 1e-3  # and the raw patches were far from white


def test_init_whitening_sets_the_models_first_layer(cifar_images, small_net):
    images = cifar_images[0][:300]
    model, variables = small_net
    x = jnp.asarray(images[:8])
    params = init_whitening(variables["params"], images, eps=5e-4)
    kernel, bias = params["whiten"]["kernel"], params["whiten"]["bias"]
    # standardise per channel, as airbench: covariance diag(lambda_z / (lambda_z + eps)) and zero mean
    std = images.std(axis=(0, 1, 2))
    p, cov_z = _numpy_patch_covariance(images / std)
    lam = np.linalg.eigvalsh(cov_z)[::-1]
    raw = p * np.tile(std, 4)  # patches of the raw images
    out = raw @ np.asarray(kernel, np.float64).reshape(12, 24) + np.asarray(bias, np.float64)
    np.testing.assert_allclose(out.mean(axis=0), 0, atol=1e-3)
    np.testing.assert_allclose(out[:, :12].T @ out[:, :12] / len(out), np.diag(lam / (lam + 5e-4)), atol=2e-3)
    np.testing.assert_allclose(bias, whitening_bias(images, kernel), rtol=1e-5)
    # the model applies the kernel in the layout image_patches flattens (then GELU)
    _, reps = model.apply({**variables, "params": params}, x, capture=True)
    pre = image_patches(x, 2) @ kernel.reshape(12, 24) + bias
    np.testing.assert_allclose(reps["whiten"].reshape(-1, 24), jax.nn.gelu(pre, approximate=False), rtol=1e-4,
                               atol=1e-5)
    with pytest.raises(ValueError, match="kernel"):
        init_whitening(params, images[:4, ..., :1])


def test_one_sgd_step_with_airbench_groups_lowers_the_loss(cifar_images, small_net):
    images, labels = cifar_images
    x, y = jnp.asarray(images[:64]), jnp.asarray(labels[:64])
    model, variables = small_net
    params = init_whitening(variables["params"], images[:300])
    stats = variables["batch_stats"]
    # airbench's groups: frozen whitening kernel, batch-norm biases at a higher learning rate
    tx = optax.multi_transform({"whiten_kernel": optax.set_to_zero(), "whiten_bias": optax.sgd(0.05),
                                "norm_bias": optax.sgd(0.5), "other": optax.sgd(0.05)}, param_labels(params))

    def loss_fn(p):
        logits, new = model.apply({"params": p, "batch_stats": stats}, x, train=True, mutable=["batch_stats"])
        onehot = optax.smooth_labels(jax.nn.one_hot(y, 10), 0.2)
        return optax.softmax_cross_entropy(logits, onehot).mean(), new["batch_stats"]

    @jax.jit
    def step(p):
        (loss, new_stats), g = jax.value_and_grad(loss_fn, has_aux=True)(p)
        u, _ = tx.update(g, tx.init(p), p)
        return loss, optax.apply_updates(p, u), new_stats

    before, new_params, new_stats = step(params)
    after = loss_fn(new_params)[0]
    print(f"loss before {float(before):.4f} after {float(after):.4f}")
    assert np.isfinite(float(before)) and float(after) < float(before) - 1e-3, (before, after)
    np.testing.assert_array_equal(new_params["whiten"]["kernel"], params["whiten"]["kernel"])  # frozen
    # batch-norm momentum 0.6 (PyTorch's 0.4): from zero running means, one batch gives m1 = 0.4 b and
    # a second pass of the same batch m2 = 0.6 m1 + 0.4 b = 1.6 m1
    _, once = model.apply({"params": params, "batch_stats": stats}, x, train=True, mutable=["batch_stats"])
    _, twice = model.apply({"params": params, **once}, x, train=True, mutable=["batch_stats"])
    m1, m2 = once["batch_stats"]["group2"]["BatchNorm_1"]["mean"], twice["batch_stats"]["group2"]["BatchNorm_1"]["mean"]
    assert np.abs(np.asarray(m1)).max() > 1e-3
    np.testing.assert_allclose(m2, 1.6 * np.asarray(m1), rtol=1e-4, atol=1e-6)
