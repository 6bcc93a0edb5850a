"""The papers' protocol in the weight-change study: Table 1, the preset, data order, transforms, stop rule."""

import dataclasses

import jax.numpy as jnp
import numpy as np
import pytest

from anatomy_jax.experiment.weight_change import (IMAGENET_MEAN, IMAGENET_STD, PAPER_SEEDS, TABLE1, RWCTrainer,
                                                  WeightChangeConfig, _summarise, paper_data, paper_setting,
                                                  prepare_study, stop_epoch)


def test_table1_is_the_papers_supplementary_table():
    # Agrawal et al. 2020, supplementary Table 1 (SPEC seed 003): arch, dataset -> lr, momentum, wd
    spec = {("resnet18", d): (0.1, 0.9, 1e-4) for d in ("cifar10", "cifar100", "mnist", "fashion_mnist")}
    spec.update({("vgg19", d): (0.05, 0.9, 5e-4) for d in ("cifar10", "cifar100", "mnist", "fashion_mnist")})
    spec.update({("alexnet", "cifar10"): (0.001, 0.9, 1e-4), ("alexnet", "cifar100"): (0.01, 0.9, 1e-4),
                 ("alexnet", "mnist"): (0.1, 0.9, 1e-4), ("alexnet", "fashion_mnist"): (0.1, 0.9, 1e-4)})
    assert TABLE1 == spec
    assert paper_setting("alexnet", "digits") == (0.1, 0.9, 1e-4)  # digits uses the MNIST row
    assert paper_setting("resnet34", "cifar10") == (0.05, 0.9, 5e-4)  # not in Table 1
    config = WeightChangeConfig(dataset="cifar100", models=("alexnet", "vgg19", "cnn"))
    assert [config.setting_of(m) for m in config.models] == [(0.01, 1e-4), (0.05, 5e-4), (0.05, 5e-4)]
    flagged = dataclasses.replace(config, learning_rate=0.2)
    assert flagged.setting_of("alexnet") == (0.2, 1e-4)
    assert dataclasses.replace(config, weight_decay=0.0).setting_of("vgg19") == (0.05, 0.0)


def test_preset_paper_fills_the_fields_left_at_their_defaults():
    config = WeightChangeConfig(preset="paper").resolved()
    assert (config.epochs, config.seeds, config.stop_at_accuracy, config.paper_augmentation) == (
        150, PAPER_SEEDS, 0.94, True)
    assert PAPER_SEEDS == (0, 42, 123, 1000, 1234)
    explicit = WeightChangeConfig(preset="paper", epochs=30, seeds=(7,), stop_at_accuracy=0.9).resolved()
    assert (explicit.epochs, explicit.seeds, explicit.stop_at_accuracy) == (30, (7,), 0.9)
    assert explicit.resolved() == explicit
    assert WeightChangeConfig().resolved() == WeightChangeConfig()
    with pytest.raises(ValueError, match="unknown preset"):
        WeightChangeConfig(preset="papers").validate()
    with pytest.raises(ValueError, match="stop_at_accuracy"):
        WeightChangeConfig(stop_at_accuracy=94).validate()
    defaults = WeightChangeConfig()
    assert (defaults.stop_at_accuracy, defaults.shuffle, defaults.max_k, defaults.drop_first_last,
            defaults.cluster_seed, defaults.pca_dim) == (0.0, True, 17, True, 42069, 2)


def _first_batches(config, data, steps):
    study = prepare_study(config, data)
    trainer, run = study.trainer(0), study.prepare_run(0)
    state, batches = run.state, []
    for _ in range(steps):
        state, x, y = trainer.train_batch(state, run.data.images, run.data.plan, run.data.patterns)
        batches.append((np.asarray(x), np.asarray(y)))
        state = state._replace(step=state.step + 1)
    return trainer, batches


def test_unshuffled_loader_visits_the_images_in_order_every_epoch():
    from anatomy_jax.data import load_digits

    data = load_digits()
    config = WeightChangeConfig(models=("cnn",), seeds=(0,), shuffle=False, augment=False, batch_size=512)
    trainer, batches = _first_batches(config, data, 4)  # 2 steps per epoch (1437 images)
    assert isinstance(trainer, RWCTrainer) and not trainer.shuffle
    images = data.train.images.astype(np.float32) / 255.0
    for step, (x, y) in enumerate(batches):
        rows = slice((step % 2) * 512, (step % 2 + 1) * 512)
        np.testing.assert_allclose(x, images[rows], atol=1e-6)
        np.testing.assert_array_equal(y, data.train.labels[rows])
    _, shuffled = _first_batches(dataclasses.replace(config, shuffle=True), data, 3)
    assert not np.array_equal(shuffled[0][1], data.train.labels[:512])
    assert not np.array_equal(shuffled[0][1], shuffled[2][1])  # a new permutation in epoch 2


def test_paper_transforms_mnist_resize_and_flip_cifar_normalisation():
    from anatomy_jax.data import from_arrays, load_digits

    digits = load_digits()
    resized = paper_data(digits)
    assert resized.image_shape == (32, 32, 1) and resized.flip_ok and len(resized.test) == len(digits.test)
    # bilinear upsampling keeps each image's mean intensity (up to the border and rounding)
    before = digits.train.images.reshape(len(digits.train), -1).mean(1)
    after = resized.train.images.reshape(len(resized.train), -1).mean(1)
    assert np.abs(before - after).max() < 3.0, np.abs(before - after).max()
    config = WeightChangeConfig(models=("cnn",), seeds=(0,), paper_augmentation=True)
    trainer = prepare_study(config, resized).trainer(0)
    assert (trainer.crop_padding, trainer.flip, trainer.input_mean) == (0, True, None)

    rng = np.random.default_rng(0)
    cifar_like = from_arrays(rng.integers(0, 256, (256, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, 256),
                             name="cifar10", flip_ok=True)
    trainer = prepare_study(config, cifar_like).trainer(0)
    assert (trainer.crop_padding, trainer.flip) == (4, True)
    assert trainer.input_mean == IMAGENET_MEAN and trainer.input_std == IMAGENET_STD
    run = prepare_study(config, cifar_like).prepare_run(0)
    x = jnp.asarray(rng.uniform(size=(4, 32, 32, 3)), jnp.float32)
    normalised = (x - jnp.asarray(IMAGENET_MEAN)) / jnp.asarray(IMAGENET_STD)
    plain = trainer.model.apply({"params": run.state.params}, normalised)
    np.testing.assert_allclose(trainer.apply(run.state.params, {}, x), plain, rtol=1e-5, atol=1e-5)
    assert not np.allclose(trainer.model.apply({"params": run.state.params}, x), plain, atol=1e-3)


def test_stop_rule_ends_the_record_at_the_first_epoch_reaching_the_threshold():
    assert stop_epoch([0.5, 0.93, 0.95, 0.9, 0.97], 0.94) == 3
    assert stop_epoch([0.5, None, 0.95], 0.94) == 3
    assert stop_epoch([0.5, 0.6], 0.94) is None and stop_epoch([0.99], 0.0) is None
    from anatomy_jax.train import RunSpec, TrainConfig

    config = WeightChangeConfig(stop_at_accuracy=0.9)
    spec = RunSpec(TrainConfig(model="cnn"), 0, 0.1, (), grid={})
    layers = ["conv1/Conv_0/kernel", "logits/Dense_0/kernel"]
    tracked = {mode: [[10 * (e + 1), {n: (e + 1) * (i + 1) * scale for i, n in enumerate(layers)}]
                      for e in range(4)] for mode, scale in (("l1_ratio", 0.01), ("elementwise", 1.0))}
    history = {"clean_accuracy": [0.5, 0.92, 0.95, 0.97], "diverged": False}
    entry = _summarise(config, {"cnn": ("conv1", "conv2", "features", "logits")})(spec, history, [], tracked)
    assert entry["stop_epoch"] == 2 and entry["epochs"] == [1, 2] and entry["final_clean_accuracy"] == 0.92
    assert entry["rwc"] == [[0.01, 0.02], [0.02, 0.04]]
    assert entry["rwc_by_mode"]["elementwise"] == [[1.0, 2.0], [2.0, 4.0]]
    open_ended = _summarise(dataclasses.replace(config, stop_at_accuracy=0.0), {"cnn": ("conv1", "logits")})(
        spec, history, [], tracked)
    assert open_ended["stop_epoch"] is None and len(open_ended["rwc"][0]) == 4
