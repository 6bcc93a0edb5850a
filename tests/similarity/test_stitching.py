"""Stitching with 1x1-convolution channel maps and trained stitches: planted maps, the resizing rule,
and two small CNNs trained on the real digits."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from anatomy_jax.similarity import (apply_conv_map, fit_conv_map, fit_linear_map, representation_shape,
                                    representations, resize_spatial, stitched_accuracy, stitched_loss,
                                    stitched_predictions, train_stitch)


def _planted(rng, n=40, size=(5, 5), ca=6, cb=4, noise=1e-3, h_a=None):
    """(h_a, h_b, W, b) with h_b = h_a @ W + b + noise at every position."""
    h_a = rng.normal(size=(n, *size, ca)).astype(np.float32) if h_a is None else h_a
    w = rng.normal(size=(h_a.shape[-1], cb)).astype(np.float32)
    b = rng.normal(size=cb).astype(np.float32)
    h_b = np.einsum("nhwc,cd->nhwd", h_a, w) + b + noise * rng.normal(size=(*h_a.shape[:3], cb))
    return h_a, h_b.astype(np.float32), w, b


def test_planted_channel_map_is_recovered_whatever_the_chunking():
    h_a, h_b, w, b = _planted(np.random.default_rng(0))
    h_a = h_a + 3.0  # an offset: the intercept must absorb it, and the float32 chunk sums must not cancel
    h_b = h_b + 3.0 * w.sum(axis=0)
    fits = [fit_conv_map(h_a, h_b, batch_size=k) for k in (7, 40, 1000)]  # padded last chunk, one chunk, n < chunk
    for fw, fb in fits:
        assert fw.shape == w.shape and fb.shape == b.shape
        np.testing.assert_allclose(fw, w, atol=2e-3)
        np.testing.assert_allclose(fb, b, atol=2e-3)
    np.testing.assert_allclose(fits[0][0], fits[1][0], atol=1e-5)


@pytest.mark.parametrize("ridge", [0.0, 50.0])
def test_fit_equals_fit_linear_map_on_the_position_rows(ridge):
    """The 1x1 map is the flattened least-squares / ridge map of every (example, position) row."""
    rng = np.random.default_rng(1)
    h_a, h_b, _, _ = _planted(rng, n=30, size=(4, 3), ca=5, cb=7, noise=0.5)
    h_a[..., 4] = h_a[..., 0] - 2 * h_a[..., 1]  # rank-deficient: the minimum-norm solution is unique
    w, b = fit_conv_map(h_a, h_b, ridge=ridge, batch_size=8)
    w_ref, b_ref = fit_linear_map(h_a.reshape(-1, 5), h_b.reshape(-1, 7), ridge=ridge)
    np.testing.assert_allclose(w, w_ref, atol=2e-4)
    np.testing.assert_allclose(b, b_ref, atol=2e-4)


def test_applying_the_map_as_a_1x1_convolution_equals_the_einsum():
    rng = np.random.default_rng(2)
    h_a, h_b, _, _ = _planted(rng, n=6, size=(5, 3), ca=4, cb=3, noise=0.1)
    w, b = fit_conv_map(h_a, h_b)
    conv = nn.Conv(3, (1, 1))
    by_conv = conv.apply({"params": {"kernel": w[None, None], "bias": b}}, jnp.asarray(h_a))
    mapped = apply_conv_map(jnp.asarray(h_a), w, b)
    np.testing.assert_allclose(mapped, by_conv, atol=1e-5)
    np.testing.assert_allclose(mapped, np.einsum("nhwc,cd->nhwd", h_a, np.asarray(w)) + np.asarray(b), atol=1e-5)


def test_resizing_average_pools_larger_maps_and_repeats_smaller_ones():
    h = np.random.default_rng(3).normal(size=(2, 4, 6, 3)).astype(np.float32)
    pooled = resize_spatial(jnp.asarray(h), (2, 3))
    blocks = np.zeros((2, 2, 3, 3), np.float32)
    for i in range(2):
        for j in range(3):
            blocks[:, i, j] = h[:, 2 * i:2 * i + 2, 2 * j:2 * j + 2].mean(axis=(1, 2))
    np.testing.assert_allclose(pooled, blocks, atol=1e-6)
    np.testing.assert_allclose(resize_spatial(jnp.asarray(h), (8, 18)), h.repeat(2, axis=1).repeat(3, axis=2))
    np.testing.assert_allclose(resize_spatial(jnp.asarray(h), (2, 12)),  # per axis: pool height, repeat width
                               h.reshape(2, 2, 2, 6, 3).mean(axis=2).repeat(2, axis=2), atol=1e-6)
    np.testing.assert_array_equal(resize_spatial(jnp.asarray(h), (4, 6)), h)
    with pytest.raises(ValueError, match=r"cannot resize height 4 to 3"):
        resize_spatial(jnp.asarray(h), (3, 6))
    with pytest.raises(ValueError, match="ratio"):
        fit_conv_map(h, np.zeros((2, 7, 4, 1), np.float32))


@pytest.mark.parametrize("size_a, size_b", [((6, 4), (3, 2)), ((2, 3), (4, 6))])
def test_fit_resizes_a_to_bs_spatial_size_first(size_a, size_b):
    rng = np.random.default_rng(4)
    h_a = rng.normal(size=(50, *size_a, 5)).astype(np.float32)
    resized = np.asarray(resize_spatial(jnp.asarray(h_a), size_b))
    _, h_b, w, b = _planted(rng, cb=3, h_a=resized)
    fw, fb = fit_conv_map(h_a, h_b, batch_size=16)
    np.testing.assert_allclose(fw, w, atol=5e-3)
    np.testing.assert_allclose(fb, b, atol=5e-3)


def test_bad_values_are_refused_with_their_names():
    h = np.zeros((4, 2, 2, 3), np.float32)
    with pytest.raises(ValueError, match="ridge must be >= 0, got -1"):
        fit_conv_map(h, h, ridge=-1.0)
    with pytest.raises(ValueError, match="same positive number of examples"):
        fit_conv_map(h, h[:3])
    with pytest.raises(ValueError, match="batch_size"):
        fit_conv_map(h, h, batch_size=0)


# ---- two small CNNs trained on the real digits ------------------------------------------------


@pytest.fixture(scope="module")
def digit_pair():
    """(model, [variables of seed 0, seed 1], data): width-0.5 CNNs after 100 steps on the digits
    (conv1 4x4x8, conv2 2x2x16)."""
    from anatomy_jax.experiment.pattern_rate import PatternRateConfig, load_study_data, make_trainer, prepare_run
    from anatomy_jax.train import train_loop

    config = PatternRateConfig(seeds=(0, 1), frequencies=(0.0,), correlations=(0.0,), learning_rates=(0.05,),
                               steps=100, eval_every=100, batch_size=64, width=0.5)
    data = load_study_data(config)
    trainer = make_trainer(config, data)
    images = jnp.asarray(data.train.images)
    variables = []
    for run in config.grid():
        run_data, _, state = prepare_run(config, trainer, data, images, run)
        state, history = train_loop(trainer, state, run_data, steps=config.steps, eval_every=config.eval_every)
        assert history["clean_accuracy"][-1] >= 0.9
        variables.append({"params": state.params})
    return trainer.model, variables, data


def _maps(model, variables, images, layer):
    """The (n, H, W, c) maps of `layer` and their shape."""
    shape = representation_shape(model, variables, images.shape[1:], layer)
    return representations(model, variables, images, [layer])[layer].reshape(-1, *shape), shape


def test_identity_conv_stitch_gives_exactly_the_nets_own_predictions(digit_pair):
    model, variables, data = digit_pair
    h, shape = _maps(model, variables[0], data.test.images, "conv1")
    own = np.asarray(model.apply(variables[0], jnp.asarray(data.test.images, jnp.float32) / 255.0).argmax(-1))
    c = shape[-1]
    stitched = stitched_predictions(model, variables[0], "conv1", h, jnp.eye(c), jnp.zeros(c), shape, conv=True)
    np.testing.assert_array_equal(stitched, own)


def test_conv_stitch_equals_the_flattened_stitch_with_the_block_diagonal_map(digit_pair):
    model, variables, data = digit_pair
    h_a, shape_a = _maps(model, variables[0], data.train.images, "conv1")
    h_b, shape_b = _maps(model, variables[1], data.train.images, "conv1")
    w, b = fit_conv_map(h_a, h_b, ridge=1e-3)
    test_a, _ = _maps(model, variables[0], data.test.images, "conv1")
    positions = shape_b[0] * shape_b[1]
    w_flat, b_flat = jnp.kron(jnp.eye(positions), w), jnp.tile(b, positions)  # the same map, position by position
    flat_a = test_a.reshape(len(test_a), -1)
    labels = data.test.labels
    np.testing.assert_array_equal(
        stitched_predictions(model, variables[1], "conv1", test_a, w, b, shape_b, conv=True),
        stitched_predictions(model, variables[1], "conv1", flat_a, w_flat, b_flat, shape_b))
    assert stitched_loss(model, variables[1], "conv1", test_a, w, b, shape_b, labels, conv=True) == pytest.approx(
        stitched_loss(model, variables[1], "conv1", flat_a, w_flat, b_flat, shape_b, labels), rel=1e-4)
    with pytest.raises(ValueError, match="does not take"):
        stitched_predictions(model, variables[1], "conv1", test_a, w[1:], b, shape_b, conv=True)


@pytest.mark.parametrize("layer_a, layer_b, floor", [("conv1", "conv1", 0.9), ("conv1", "conv2", 0.7)])
def test_trained_conv_stitch_beats_its_least_squares_start_on_held_out_digits(digit_pair, layer_a, layer_b, floor):
    """Bansal et al.'s trained stitch, from the least-squares 1x1 map (conv1 -> conv2: A's 4x4 map
    average-pooled to B's 2x2): held-out loss falls and accuracy does not."""
    model, variables, data = digit_pair
    h_a, _ = _maps(model, variables[0], data.train.images, layer_a)
    h_b, shape_b = _maps(model, variables[1], data.train.images, layer_b)
    test_a, _ = _maps(model, variables[0], data.test.images, layer_a)
    w0, b0 = fit_conv_map(h_a, h_b, ridge=1e-3)
    w, b = train_stitch(model, variables[1], layer_b, h_a, w0, b0, shape_b, data.train.labels,
                        key=jax.random.key(0), steps=100, learning_rate=1e-2, conv=True)
    assert w.shape == w0.shape and b.shape == b0.shape
    held_out = dict(labels=data.test.labels, conv=True)
    loss0 = stitched_loss(model, variables[1], layer_b, test_a, w0, b0, shape_b, **held_out)
    loss = stitched_loss(model, variables[1], layer_b, test_a, w, b, shape_b, **held_out)
    acc0 = stitched_accuracy(model, variables[1], layer_b, test_a, w0, b0, shape_b, **held_out)
    acc = stitched_accuracy(model, variables[1], layer_b, test_a, w, b, shape_b, **held_out)
    assert loss < loss0, (loss, loss0)
    assert acc >= acc0 and acc >= floor, (acc, acc0)
    start = train_stitch(model, variables[1], layer_b, h_a, w0, b0, shape_b, data.train.labels,
                         key=jax.random.key(0), steps=0, conv=True)
    np.testing.assert_array_equal(start[0], w0)
    np.testing.assert_array_equal(start[1], b0)


def test_trained_flattened_stitch_improves_and_zero_steps_return_the_start(digit_pair):
    model, variables, data = digit_pair
    h_a = representations(model, variables[0], data.train.images, ["conv2"])["conv2"]
    h_b = representations(model, variables[1], data.train.images, ["conv2"])["conv2"]
    test_a = representations(model, variables[0], data.test.images, ["conv2"])["conv2"]
    shape_b = representation_shape(model, variables[1], data.image_shape, "conv2")
    w0, b0 = fit_linear_map(h_a, h_b, ridge=1e-1)
    args = (model, variables[1], "conv2", h_a, w0, b0, shape_b, data.train.labels)
    w, b = train_stitch(*args, key=jax.random.key(1), steps=100, learning_rate=1e-2)
    held_out = (shape_b, data.test.labels)
    assert (stitched_loss(model, variables[1], "conv2", test_a, w, b, *held_out)
            < stitched_loss(model, variables[1], "conv2", test_a, w0, b0, *held_out))
    assert (stitched_accuracy(model, variables[1], "conv2", test_a, w, b, *held_out)
            >= stitched_accuracy(model, variables[1], "conv2", test_a, w0, b0, *held_out))
    w_same, b_same = train_stitch(*args, key=jax.random.key(1), steps=0)
    np.testing.assert_array_equal(w_same, w0)
    np.testing.assert_array_equal(b_same, b0)
    # reproducible from the key, and the caller's start is not consumed by the donated step
    again = train_stitch(*args, key=jax.random.key(1), steps=3)
    np.testing.assert_array_equal(again[0], train_stitch(*args, key=jax.random.key(1), steps=3)[0])
    assert not np.array_equal(again[0], train_stitch(*args, key=jax.random.key(2), steps=3)[0])
    np.testing.assert_array_equal(np.asarray(w0), np.asarray(fit_linear_map(h_a, h_b, ridge=1e-1)[0]))
    with pytest.raises(ValueError, match="steps must be >= 0, got -1"):
        train_stitch(*args, key=jax.random.key(0), steps=-1)
