"""Shared fixtures: paths to the real datasets in ../shared/data and a per-session cache."""

from __future__ import annotations

import os
import pathlib
import shutil
import tempfile
from typing import Any, NamedTuple

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = (ROOT / ".." / "shared" / "data").resolve()
TFDS_DIR = SHARED_DATA / "tfds"
CIFAR_DIR = SHARED_DATA / "cifar10"


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: end-to-end training on real data (still run in CI)")
    # One persistent compilation cache for the whole run: the controller creates it before the
    # xdist workers start, and the workers and the CLI subprocesses of the tests inherit it through
    # the environment, so a program one of them compiled is loaded, not compiled, by the others.
    if not hasattr(config, "workerinput") and "JAX_COMPILATION_CACHE_DIR" not in os.environ:
        config._anatomy_jax_cache = tempfile.mkdtemp(prefix="anatomy_jax_xla_cache_")
        os.environ["JAX_COMPILATION_CACHE_DIR"] = config._anatomy_jax_cache
        os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.3")


def pytest_unconfigure(config):
    cache = getattr(config, "_anatomy_jax_cache", None)
    if cache is not None:
        shutil.rmtree(cache, ignore_errors=True)


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory):
    """Decoded datasets are cached under ANATOMY_JAX_CACHE; tests keep their own unless one is set."""
    if "ANATOMY_JAX_CACHE" not in os.environ:
        os.environ["ANATOMY_JAX_CACHE"] = str(tmp_path_factory.mktemp("anatomy_jax_cache"))
    yield


@pytest.fixture(scope="session")
def mnist():
    """Full MNIST read through tfds.data_source from ../shared/data/tfds (no network)."""
    from anatomy_jax.data import load_tfds

    if not (TFDS_DIR / "mnist").is_dir():
        pytest.fail(f"real MNIST is expected in {TFDS_DIR}")
    return load_tfds("mnist", data_dir=str(TFDS_DIR), download=False)


@pytest.fixture(scope="session")
def cifar10_exact():
    """The pixel-exact CIFAR-10 subset (5085 train / 1017 test) as a Dataset built from arrays."""
    from anatomy_jax.data import from_arrays

    with np.load(CIFAR_DIR / "train_exact.npz", allow_pickle=False) as tr, \
            np.load(CIFAR_DIR / "test_exact.npz", allow_pickle=False) as te:
        return from_arrays(tr["x"], tr["y"], te["x"], te["y"], name="cifar10_exact", flip_ok=True)


class BackdooredMnist(NamedTuple):
    """A small CNN trained on real MNIST twice from the same seed: clean (`natural`) and with a
    BadNets trigger (`backdoored`), their test-time apply function and the trigger's place."""

    model: Any
    natural: Any  # variables
    backdoored: Any  # variables
    data: Any  # the MNIST subset both were trained on (test split: held-out images)
    target: int
    box: list  # the trigger's [row0, col0, row1, col1) (exclusive ends)
    clean_accuracy: dict  # {"natural": ..., "backdoored": ...} on the test subset
    trigger_asr: dict  # ASR of the planted trigger on the test subset


BACKDOORED_MNIST = dict(dataset="mnist", data_dir=str(TFDS_DIR), train_size=12000, test_size=2000, model="cnn",
                        steps=500, patch_size=3, location="bottom-right", target=0, frequency=0.1, correlation=1.0)


@pytest.fixture(scope="session")
def backdoored_mnist_cnn(tmp_path_factory) -> BackdooredMnist:
    """Trained once per test run and shared by the xdist workers: the first worker to take the
    lock trains the two models into an orbax checkpoint beside the workers' temp dirs, the others
    load it (the study runner loads a complete study instead of training it)."""
    import fcntl

    from anatomy_jax.experiment.backdoor_models import train_studies, trigger_box
    from anatomy_jax.experiment.class_patterns import ClassPatternsConfig, model_studies
    from anatomy_jax.models.registry import create_model

    config = ClassPatternsConfig(**BACKDOORED_MNIST)
    data = config.load_data()
    shared = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = shared.parent  # one folder above every worker's own
    studies = {"backdoored_mnist_cnn": model_studies(config, data)["standard"]}
    with open(shared / "backdoored_mnist_cnn.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        variables, summaries = train_studies(studies, config.training_settings(data), shared, progress=False)
        fcntl.flock(lock, fcntl.LOCK_UN)
    return BackdooredMnist(create_model("cnn", num_classes=10), variables["natural"], variables["backdoored"], data,
                           config.target, trigger_box(config.trigger(data.image_shape), data.image_shape),
                           {name: s["clean_accuracy"] for name, s in summaries.items()},
                           {name: s["trigger_asr"] for name, s in summaries.items()})
