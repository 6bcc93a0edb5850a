import shutil
import time

import numpy as np
import pytest

from anatomy_jax.data import cache_dir, from_arrays, load_dataset, load_digits, load_npz, load_tfds, subset
from tests.conftest import TFDS_DIR

MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def test_digits_is_real_uint8_with_fixed_split():
    d = load_digits()
    assert d.train.images.shape == (1437, 8, 8, 1) and d.test.images.shape == (360, 8, 8, 1)
    assert d.train.images.dtype == np.uint8 and d.train.labels.dtype == np.int32
    assert d.train.images.max() == 255 and d.train.images.min() == 0
    assert d.num_classes == 10 and set(np.unique(d.test.labels)) == set(range(10))
    again = load_digits()
    np.testing.assert_array_equal(d.test.images, again.test.images)
    # 0..16 rescaled to 0..255: every value is round(v * 255 / 16) for an integer v.
    allowed = np.round(np.arange(17) * 255 / 16).astype(np.uint8)
    assert np.isin(d.train.images, allowed).all()


def test_mnist_through_tfds_matches_published_counts(mnist):
    assert mnist.train.images.shape == (60000, 28, 28, 1) and mnist.test.images.shape == (10000, 28, 28, 1)
    assert mnist.train.images.dtype == np.uint8
    assert np.bincount(mnist.train.labels).tolist() == MNIST_TRAIN_COUNTS
    assert np.bincount(mnist.test.labels).tolist() == MNIST_TEST_COUNTS
    assert mnist.class_names == tuple(str(i) for i in range(10))


def test_tfds_cache_is_written_once_and_reused(mnist):
    cached = sorted(cache_dir().glob("mnist-3.0.1-*.npz"))
    assert len(cached) == 2  # train and test, written by the session fixture
    start = time.time()
    again = load_tfds("mnist", data_dir=str(TFDS_DIR), download=False)
    assert time.time() - start < 5.0  # decoding through tfds takes 8-20 s; the cache far less
    np.testing.assert_array_equal(again.test.images, mnist.test.images)


def test_unknown_dataset_and_unprepared_dataset_fail_fast(tmp_path):
    with pytest.raises(ValueError, match="unknown dataset 'imagenet77'"):
        load_dataset("imagenet77")
    start = time.time()
    with pytest.raises(ValueError, match="not prepared"):
        load_dataset("cifar10", data_dir=str(tmp_path), download=False)
    assert time.time() - start < 10.0


def test_corrupt_tfds_files_give_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("ANATOMY_JAX_CACHE", str(tmp_path / "cache"))
    shutil.copytree(TFDS_DIR / "mnist", tmp_path / "mnist")
    for f in (tmp_path / "mnist" / "3.0.1").glob("*.array_record*"):
        f.chmod(0o644)
        f.write_bytes(b"not an array record file" * 10)
    with pytest.raises(ValueError, match="could not read mnist"):
        load_tfds("mnist", data_dir=str(tmp_path), download=False)


def test_from_arrays_and_npz(cifar10_exact, tmp_path):
    assert cifar10_exact.train.images.shape == (5085, 32, 32, 3) and cifar10_exact.num_classes == 10
    x, y = cifar10_exact.test.images, cifar10_exact.test.labels
    path = tmp_path / "mine.npz"
    np.savez(path, x=x, y=y)
    d = load_npz(path)
    assert len(d.train) + len(d.test) == len(y) and len(d.test) == round(0.2 * len(y))
    np.testing.assert_array_equal(load_dataset(f"npz:{path}").test.images, d.test.images)
    with pytest.raises(ValueError, match="uint8"):
        from_arrays(x.astype(np.float32), y)
    with pytest.raises(ValueError, match="labels must be"):
        from_arrays(x, y[:-1])
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"garbage")
    with pytest.raises(ValueError, match="cannot read npz"):
        load_npz(bad)
    with pytest.raises(ValueError, match="does not exist"):
        load_dataset(f"npz:{tmp_path / 'missing.npz'}")


def test_subset_is_deterministic(cifar10_exact):
    a, b = subset(cifar10_exact.train, 100), subset(cifar10_exact.train, 100)
    assert len(a) == 100
    np.testing.assert_array_equal(a.labels, b.labels)


def test_unpreparable_dataset_says_tensorflow_is_needed(tmp_path, monkeypatch):
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "tensorflow" else real_find_spec(name, *a))
    start = time.time()
    with pytest.raises(ValueError, match=r"needs TensorFlow.*\.\[prepare\]"):
        load_dataset("svhn_cropped", data_dir=str(tmp_path), download=True)
    assert time.time() - start < 10.0
