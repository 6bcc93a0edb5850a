"""Extremal / meaningful perturbation building blocks and saliency baselines against hand-computed
cases, closed forms and an independent implementation (the `saliency` package)."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from anatomy_jax.attribution import (apply_pyramid, area_rank_loss, area_reference, blur_pyramid, curve_auc,
                                     deletion_curve, extremal_perturbation, gaussian_blur, gaussian_kernel, grad_cam,
                                     integrated_gradients, pointing_game, rank_correlation, scaled_defaults,
                                     scaled_tolerance, smooth_mask_generator, smoothgrad, tv_norm)
from anatomy_jax.models.registry import create_model
from tests.attribution.conftest import BOX, box_readout


def test_gaussian_kernel_and_blur_match_hand_computation():
    k = gaussian_kernel(1.0)
    taps = np.exp(-np.arange(-4, 5) ** 2 / 2.0)
    np.testing.assert_allclose(k, taps / taps.sum(), rtol=1e-5)
    np.testing.assert_array_equal(gaussian_kernel(0.0), [1.0])
    x = np.zeros((1, 9, 9, 1), np.float32)
    x[0, 4, 4] = 1.0  # an impulse in the middle: the blur is the outer product of the kernel
    np.testing.assert_allclose(np.asarray(gaussian_blur(jnp.asarray(x), 1.0))[0, ..., 0], np.outer(k, k), atol=1e-6)
    corner = np.zeros((1, 9, 9, 1), np.float32)
    corner[0, 0, 0] = 1.0  # zero padding: mass falls off the edge
    assert float(gaussian_blur(jnp.asarray(corner), 1.0).sum()) == pytest.approx(k[4:].sum() ** 2, rel=1e-5)


def test_pyramid_levels_and_interpolation():
    x = jax.random.uniform(jax.random.key(0), (6, 6, 2))
    pyr = blur_pyramid(x, num_levels=3, max_blur=2.0)
    np.testing.assert_allclose(pyr[2], x, atol=1e-6)  # level L-1: the image
    np.testing.assert_allclose(pyr[1], gaussian_blur(x, 1.0), atol=1e-6)  # sigma_l = 2 (1 - l / 2)
    np.testing.assert_allclose(pyr[0], gaussian_blur(x, 2.0), atol=1e-6)
    mask = jnp.array([[1.0, 0.0, 0.5, 0.25, 0.75, 0.1]] * 6)
    out = apply_pyramid(pyr, mask)
    np.testing.assert_allclose(out[:, 0], x[:, 0], atol=1e-6)
    np.testing.assert_allclose(out[:, 1], pyr[0, :, 1], atol=1e-6)
    np.testing.assert_allclose(out[:, 2], pyr[1, :, 2], atol=1e-6)
    np.testing.assert_allclose(out[:, 3], 0.5 * pyr[0, :, 3] + 0.5 * pyr[1, :, 3], atol=1e-6)
    np.testing.assert_allclose(out[:, 4], 0.5 * pyr[1, :, 4] + 0.5 * pyr[2, :, 4], atol=1e-6)
    np.testing.assert_allclose(out[:, 5], 0.8 * pyr[0, :, 5] + 0.2 * pyr[1, :, 5], atol=1e-6)
    fade = blur_pyramid(x, num_levels=5, kind="fade")
    np.testing.assert_allclose(fade[1], 0.25 * x, atol=1e-6)


def test_smooth_mask_is_the_smooth_max_of_kernels():
    gen = smooth_mask_generator((9, 9), step=1, sigma=1.0, coldness=math.inf)
    p = jnp.zeros(gen.param_shape).at[4, 4].set(1.0)
    m = np.asarray(gen(p))
    rows, cols = np.meshgrid(np.arange(9), np.arange(9), indexing="ij")
    z = np.hypot(rows - 4, cols - 4)  # sigma 1: grid points on pixel centres
    window = (np.abs(rows - 4) <= 2) & (np.abs(cols - 4) <= 2)  # radius 1 + ceil(sigma / step) grid points
    np.testing.assert_allclose(m, np.where(window, np.exp(-2 * np.maximum(z - 0.5, 0) ** 2), 0.0), atol=1e-6)
    # coldness 20: the softmax-weighted mean of the one non-zero value v and K - 1 zeros
    soft = smooth_mask_generator((9, 9), step=1, sigma=1.0)
    v = math.exp(-2 * 0.5 ** 2)  # the neighbour at distance 1
    k = soft.index.shape[-1]
    expected = v * math.exp(20 * v) / (math.exp(20 * v) + k - 1)
    assert float(soft(p)[4, 5]) == pytest.approx(expected, rel=1e-5)
    np.testing.assert_allclose(soft(jnp.ones(soft.param_shape)), 1.0, atol=1e-3)  # softmax mean just under the max
    big = smooth_mask_generator((224, 224), **{k: v for k, v in scaled_defaults(224).items() if k != "max_blur"})
    assert big.param_shape == (32, 32)  # TorchRay: step 7 on 224 px


def test_ranking_regulariser_and_tv_hand_cases():
    np.testing.assert_array_equal(area_reference(10, 0.25), [0] * 7 + [1] * 3)  # int(10 * 0.75) = 7 zeros
    assert float(area_rank_loss(jnp.array([[1.0, 0.0], [0.0, 1.0]]), 0.5)) == 0.0
    assert float(area_rank_loss(jnp.full((2, 2), 0.5), 0.5)) == pytest.approx(0.25)
    assert float(area_rank_loss(jnp.array([[0.2, 0.9], [0.0, 0.4]]), 0.25)) == pytest.approx(
        (0.0 + 0.04 + 0.16 + 0.01) / 4)
    m = jnp.array([[0.0, 1.0], [0.0, 0.0]])
    assert float(tv_norm(m, beta=2.0)) == pytest.approx(0.5 + 0.5)  # mean |dy|^2 = 1/2, mean |dx|^2 = 1/2
    assert scaled_defaults(224) == {"step": 7, "sigma": 21.0, "max_blur": 20.0}
    assert scaled_tolerance(224) == 15 and scaled_tolerance(28) == 2


def test_pointing_game_tolerance_and_auc():
    maps = np.zeros((3, 10, 10), np.float32)
    maps[0, 5, 5] = 1  # inside [4, 4, 7, 7)
    maps[1, 5, 8] = 1  # 2 px right of the box's last column
    maps[2, 9, 9] = 1  # (3, 3) px away: distance 4.24
    box = [4, 4, 7, 7]
    np.testing.assert_array_equal(pointing_game(jnp.asarray(maps), box), [True, False, False])
    np.testing.assert_array_equal(pointing_game(jnp.asarray(maps), box, tolerance=2), [True, True, False])
    np.testing.assert_array_equal(pointing_game(jnp.asarray(maps), box, tolerance=4.3), [True, True, True])
    np.testing.assert_allclose(curve_auc(jnp.linspace(1.0, 0.0, 9)[None]), [0.5], atol=1e-6)


def test_deletion_curve_removes_the_most_salient_pixels_first():
    x = jnp.ones((1, 32, 32, 1))
    perfect = jnp.zeros((1, 32, 32)).at[:, BOX[0]:BOX[2], BOX[1]:BOX[3]].set(1.0)
    # 16 steps of 64 px: the box goes in the first step, then the logit is 0 and p = 1/2
    curve = np.asarray(deletion_curve(box_readout, None, 0.1 * x, jnp.zeros(1, jnp.int32), perfect))
    assert curve[0, 0] == pytest.approx(float(jax.nn.sigmoid(6.4)), rel=1e-5)
    np.testing.assert_allclose(curve[0, 1:], 0.5, atol=1e-6)


def test_rank_correlation_matches_scipy():
    a = np.random.default_rng(0).integers(0, 5, (2, 6, 6)).astype(float)  # ties
    b = np.random.default_rng(1).normal(size=(2, 6, 6))
    expected = [scipy.stats.spearmanr(a[i].ravel(), b[i].ravel())[0] for i in range(2)]
    np.testing.assert_allclose(rank_correlation(a, b), expected, rtol=1e-10)


def test_vmapped_areas_equal_separate_runs(box_images):
    """To float rounding. The ranking regulariser treats mask values within TIE_TOLERANCE as tied and
    orders them by a random priority per image, so rounding (near-equal pixels) does not reorder
    them: 2.4e-7 after 40 iterations. Ordered by the raw values and pixel index (tie_break="index")
    the sort amplifies rounding: 2e-7 after 3 iterations, 0.3 at some pixel after 40."""
    args = (box_readout, None, box_images, jnp.zeros(2, jnp.int32))
    kw = dict(max_iter=40, jitter="none")
    together = extremal_perturbation(*args, (0.05, 0.2), jax.random.key(3), **kw)
    for i, a in enumerate((0.05, 0.2)):
        alone = extremal_perturbation(*args, (a,), jax.random.key(3), **kw)
        np.testing.assert_allclose(together.masks[:, i], alone.masks[:, 0], atol=1e-5)
        np.testing.assert_allclose(together.scores[:, i], alone.scores[:, 0], rtol=1e-5)


def test_integrated_gradients_is_exact_on_a_linear_model(box_images):
    ig = integrated_gradients(box_readout, None, box_images, jnp.zeros(2, jnp.int32), steps=5, per_channel=True)
    r0, c0, r1, c1 = BOX
    expected = np.zeros((2, 32, 32, 1))
    expected[:, r0:r1, c0:c1] = np.asarray(box_images)[:, r0:r1, c0:c1]
    np.testing.assert_allclose(ig, expected, rtol=1e-5)


@pytest.fixture(scope="module")
def small_cnn():
    model = create_model("cnn", num_classes=10)
    variables = model.init(jax.random.key(0), jnp.zeros((1, 8, 8, 1)))
    images = jax.random.uniform(jax.random.key(2), (3, 8, 8, 1))
    return model, variables, images


def _call_model(model, variables, target):
    """The `saliency` package's model-call function: input gradients of one class's logit."""
    import saliency.core as saliency

    grad = jax.jit(jax.grad(lambda x: model.apply(variables, x)[:, target].sum()))

    def call(x, call_model_args=None, expected_keys=None):
        return {saliency.INPUT_OUTPUT_GRADIENTS: np.asarray(grad(jnp.asarray(x, jnp.float32)))}

    return call


def test_integrated_gradients_and_smoothgrad_agree_with_the_saliency_package(small_cnn):
    import saliency.core as saliency

    model, variables, images = small_cnn
    targets = jnp.array([3, 0, 7])
    ours_ig = integrated_gradients(model.apply, variables, images, targets, steps=20, per_channel=True)
    samples = 6
    x = np.asarray(images)
    stdevs = 0.15 * (x.max(axis=(1, 2, 3)) - x.min(axis=(1, 2, 3)))
    streams = [np.random.RandomState(100 + i) for i in range(3)]  # the draws saliency makes from the same state
    draws = [[streams[i].normal(0, stdevs[i], x[i].shape) for _ in range(samples)] for i in range(3)]
    noise = jnp.asarray(np.stack([np.stack([draws[i][s] / stdevs[i] for i in range(3)]) for s in range(samples)]))
    ours_sg = smoothgrad(model.apply, variables, images, targets, None, noise=noise, per_channel=True)
    for i, t in enumerate(np.asarray(targets)):
        call = _call_model(model, variables, int(t))
        theirs = saliency.IntegratedGradients().GetMask(x[i], call, x_baseline=np.zeros_like(x[i]), x_steps=20,
                                                        batch_size=20)
        np.testing.assert_allclose(ours_ig[i], theirs, rtol=1e-4, atol=1e-6)
        state = np.random.get_state()
        np.random.set_state(np.random.RandomState(100 + i).get_state())
        theirs_sg = saliency.GradientSaliency().GetSmoothedMask(x[i], call, stdev_spread=0.15, nsamples=samples)
        np.random.set_state(state)
        np.testing.assert_allclose(ours_sg[i], theirs_sg, rtol=1e-4, atol=1e-8)


def test_bad_inputs_are_refused(small_cnn, box_images):
    model, variables, images = small_cnn
    with pytest.raises(ValueError, match="areas"):
        extremal_perturbation(box_readout, None, box_images, jnp.zeros(2, jnp.int32), (0.0,), jax.random.key(0))
    with pytest.raises(ValueError, match="variant"):
        extremal_perturbation(box_readout, None, box_images, jnp.zeros(2, jnp.int32), (0.1,), jax.random.key(0),
                              variant="keep")
    with pytest.raises(ValueError, match="unknown layer"):
        grad_cam(model.apply, variables, images, jnp.zeros(3, jnp.int32), "conv9")
    with pytest.raises(ValueError, match="spatial"):
        grad_cam(model.apply, variables, images, jnp.zeros(3, jnp.int32), "features")
    with pytest.raises(ValueError, match="box"):
        pointing_game(jnp.zeros((1, 8, 8)), [0, 0, 9, 9])


def test_meaningful_mask_blur_keeps_a_constant_mask_constant():
    """Zero-padded blur darkens a mask's border; the normalised blur does not, and equals the plain
    blur (up to the normalising factor) away from the border."""
    from anatomy_jax.attribution.meaningful import normalised_blur

    ones = jnp.ones((28, 28))
    assert float(gaussian_blur(ones[..., None], 0.625)[0, 0, 0]) < 0.75  # the bias being corrected
    np.testing.assert_allclose(normalised_blur(ones, 0.625), ones, rtol=1e-6)
    m = jax.random.uniform(jax.random.key(0), (28, 28))
    centre = normalised_blur(m, 0.625)[10:18, 10:18]
    np.testing.assert_allclose(centre, gaussian_blur(m[..., None], 0.625)[10:18, 10:18, 0], rtol=1e-5)
