"""Shared fixtures: paths to the real datasets in ../shared/data and a per-session cache."""

from __future__ import annotations

import os
import pathlib
import shutil
import tempfile

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
