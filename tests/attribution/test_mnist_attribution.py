"""Attribution on a small CNN backdoored on real MNIST (the shared session fixture): extremal and
meaningful perturbations point at the 3x3 trigger; deleting the region the meaningful mask chose
restores the true class; masks' deletion curves fall faster than random maps'; the natural net's maps
of the same stamped images (explaining the target, and its own class) do not point at the trigger;
maps of a re-initialised net differ from the trained net's (Adebayo et al. 2018) by more than the
trained net's maps with another random key do."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from anatomy_jax.attribution import (curve_auc, deletion_curve, extremal_perturbation, grad_cam, gradient,
                                     integrated_gradients, meaningful_perturbation, perturbation_reference,
                                     pointing_game, rank_correlation, smoothgrad)
from anatomy_jax.experiment.class_patterns import ClassPatternsConfig
from anatomy_jax.poison import make_patterns, stamp_everywhere
from anatomy_jax.train.evaluation import to_float
from tests.conftest import BACKDOORED_MNIST

pytestmark = pytest.mark.slow
N_IMAGES = 24


@pytest.fixture(scope="module")
def explained(backdoored_mnist_cnn):
    """Stamped non-target test images the backdoored net calls the target, their true labels."""
    b = backdoored_mnist_cnn
    trigger = ClassPatternsConfig(**BACKDOORED_MNIST).trigger(b.data.image_shape)
    patterns = make_patterns([trigger], b.data.image_shape)
    x = to_float(jnp.asarray(b.data.test.images[:400]))
    y = np.asarray(b.data.test.labels[:400])
    stamped = stamp_everywhere(x, patterns)
    pred = np.asarray(b.model.apply(b.backdoored, stamped).argmax(-1))
    keep = np.flatnonzero((y != b.target) & (pred == b.target))[:N_IMAGES]
    assert len(keep) == N_IMAGES
    return stamped[keep], y[keep], jnp.full(N_IMAGES, b.target, jnp.int32)


@pytest.fixture(scope="module")
def maps(backdoored_mnist_cnn, explained):
    b = backdoored_mnist_cnn
    images, _, targets = explained
    ep = extremal_perturbation(b.model.apply, b.backdoored, images, targets, (9 / 784, 0.05), jax.random.key(0),
                               max_iter=300, jitter="none")
    mp = meaningful_perturbation(b.model.apply, b.backdoored, images, targets, jax.random.key(1), iters=150)
    return {"extremal": ep, "meaningful": mp, "gradient": gradient(b.model.apply, b.backdoored, images, targets)}


def test_extremal_and_meaningful_point_at_the_trigger(backdoored_mnist_cnn, maps):
    box = backdoored_mnist_cnn.box
    rates = {"extremal": float(pointing_game(maps["extremal"].masks.sum(1), box).mean()),
             "meaningful": float(pointing_game(maps["meaningful"].saliency, box).mean()),
             "gradient": float(pointing_game(maps["gradient"], box).mean())}
    area_error = float(jnp.abs(maps["extremal"].masks.mean((2, 3)) - jnp.array([9 / 784, 0.05])).mean())
    print(f"pointing game on {N_IMAGES} stamped MNIST images: {rates}; extremal mask_area_error {area_error:.4f}")
    assert rates["extremal"] >= 0.9 and rates["meaningful"] >= 0.9


def test_deleting_the_meaningful_region_restores_the_true_class(backdoored_mnist_cnn, explained, maps):
    b = backdoored_mnist_cnn
    images, labels, _ = explained
    region = (maps["meaningful"].saliency >= 0.5)[..., None]
    blurred = perturbation_reference(images, "blur", jax.random.key(0), 1.0)
    restored = np.asarray(b.model.apply(b.backdoored, jnp.where(region, blurred, images)).argmax(-1))
    rate = float((restored == labels).mean())
    area = float(region.mean())
    print(f"true class restored on {rate:.2f} of the images by blurring {area:.4f} of the pixels")
    assert rate > 0.5
    assert area <= 0.1  # a small region (the 3x3 trigger is 1.1% of the image), not most of the digit
    # a random region of the same size restores far fewer
    rng = np.random.default_rng(0)
    random_region = (rng.random(region.shape) < area)
    random_rate = float((np.asarray(b.model.apply(b.backdoored, jnp.where(random_region, blurred, images)).argmax(-1))
                         == labels).mean())
    assert random_rate < rate - 0.3


def test_mask_deletion_curves_fall_faster_than_random_maps(backdoored_mnist_cnn, explained, maps):
    b = backdoored_mnist_cnn
    images, _, targets = explained
    auc = {}
    candidates = {"extremal": maps["extremal"].masks.sum(1), "meaningful": maps["meaningful"].saliency,
                  "random": jax.random.uniform(jax.random.key(5), images.shape[:3])}
    for name, m in candidates.items():
        auc[name] = np.asarray(curve_auc(deletion_curve(b.model.apply, b.backdoored, images, targets, m, steps=16)))
    print({k: round(float(v.mean()), 3) for k, v in auc.items()})
    for name in ("extremal", "meaningful"):
        assert auc[name].mean() < auc["random"].mean() - 0.2
        assert (auc[name] < auc["random"]).mean() >= 0.9


def test_the_natural_net_does_not_point_at_the_trigger(backdoored_mnist_cnn, explained, maps):
    """The control of the pointing game: the natural net on the same stamped images, explaining the
    target (the backdoored net's class: only the model changes) and its own predicted class. Were
    the hits the stamp's contrast, not the backdoor, these would hit the box as well."""
    b = backdoored_mnist_cnn
    images, _, targets = explained
    box = b.box
    own = jnp.asarray(b.model.apply(b.natural, images).argmax(-1), jnp.int32)
    backdoored = {"meaningful": maps["meaningful"].saliency, "gradient": maps["gradient"]}
    natural = {}
    for group, classes in (("target", targets), ("own class", own)):
        natural[group] = {
            "meaningful": meaningful_perturbation(b.model.apply, b.natural, images, classes, jax.random.key(1),
                                                  iters=150).saliency,
            "gradient": gradient(b.model.apply, b.natural, images, classes)}

    def rate(m):
        return float(pointing_game(m, box).mean())

    rates = {"backdoored": {k: rate(m) for k, m in backdoored.items()},
             **{f"natural, {g}": {k: rate(m) for k, m in v.items()} for g, v in natural.items()}}
    print(f"pointing game on {N_IMAGES} stamped MNIST images (natural net calls {float((own == b.target).mean()):.2f}"
          f" of them the target): {rates}")
    for method in ("meaningful", "gradient"):
        assert rates["backdoored"][method] >= 0.9, method
        for group in ("natural, target", "natural, own class"):
            assert rates[group][method] <= 0.3, (group, method)


def test_maps_of_a_reinitialised_net_differ(backdoored_mnist_cnn, explained):
    """Spearman per image over the pixels where either map is non-zero, as the experiment counts it
    (over all pixels the black background's tied zeros inflate it), and with another random key for
    the re-initialised net's SmoothGrad than for the trained net's, read against the noise floor:
    the trained net's SmoothGrad with that other key."""
    b = backdoored_mnist_cnn
    images, _, targets = explained
    random_net = b.model.init(jax.random.key(123), images[:1])
    methods = {"gradient": lambda v, k: gradient(b.model.apply, v, images, targets),
               "integrated_gradients": lambda v, k: integrated_gradients(b.model.apply, v, images, targets,
                                                                         reduce="sum_abs"),
               "smoothgrad": lambda v, k: smoothgrad(b.model.apply, v, images, targets, k),
               "grad_cam": lambda v, k: grad_cam(b.model.apply, v, images, targets, "conv1")}

    def spearman(x, y):
        x, y = np.asarray(x), np.asarray(y)
        return rank_correlation(x, y, where=(x != 0) | (y != 0))

    trained = {name: f(b.backdoored, jax.random.key(0)) for name, f in methods.items()}
    rho = {name: spearman(trained[name], f(random_net, jax.random.key(1))) for name, f in methods.items()}
    defined = {name: int(np.isfinite(r).sum()) for name, r in rho.items()}
    corr = {name: float(np.nanmean(r)) if defined[name] else None for name, r in rho.items()}
    floor = float(np.nanmean(spearman(trained["smoothgrad"], methods["smoothgrad"](b.backdoored, jax.random.key(1)))))
    print(f"rank correlation (non-zero pixels), trained vs re-initialised net: {corr}, defined on {defined} of "
          f"{N_IMAGES} images; SmoothGrad noise floor (trained net, another key) {floor:.2f}")
    # Measured: gradient 0.64, integrated gradients 0.41 (0.99 over all pixels), their floor 1 (deterministic):
    # reported, not asserted (see the README); SmoothGrad 0.23 against its floor 0.94, Grad-CAM (conv1) 0.26.
    for name in ("smoothgrad", "grad_cam"):
        assert defined[name] >= N_IMAGES // 2, name
        assert corr[name] < 0.5, name
    assert corr["smoothgrad"] < floor - 0.3
