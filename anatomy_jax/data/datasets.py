"""Image classification datasets as uint8 NHWC arrays.

One loader, `load_dataset`, for the embedded offline default (`digits`, scikit-learn's real 8x8
handwritten digits), the tensorflow-datasets catalog (`mnist`, `fashion_mnist`, `cifar10`,
`cifar100`, `svhn_cropped`, read through `tfds.data_source` without TensorFlow) and a user's own
arrays (`from_arrays`, or `npz:PATH` by name). Decoded tfds splits are cached once as npz files in
a user cache directory (`$ANATOMY_JAX_CACHE`, default `~/.cache/anatomy_jax`), never inside the
data directory, which may be read-only.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import os
import pathlib
import tempfile
import zipfile

import numpy as np

TFDS_DATASETS = ("mnist", "fashion_mnist", "cifar10", "cifar100", "svhn_cropped")
DATASET_NAMES = ("digits",) + TFDS_DATASETS
# Datasets whose images may be mirrored left-right without changing the class.
_FLIP_OK = ("cifar10", "cifar100")
DIGITS_TRAIN_SIZE = 1437  # of 1797; the remaining 360 are the test split
_SPLIT_SEED = 0


@dataclasses.dataclass(frozen=True)
class Split:
    """One split of a dataset: uint8 images (N, H, W, C) in 0..255 and int32 labels (N,)."""

    images: np.ndarray
    labels: np.ndarray
    name: str

    def __len__(self) -> int:
        return int(self.labels.shape[0])


@dataclasses.dataclass(frozen=True)
class Dataset:
    """A train and a test split with their class names and augmentation defaults."""

    name: str
    train: Split
    test: Split
    class_names: tuple[str, ...]
    flip_ok: bool = False

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.train.images.shape[1:])  # type: ignore[return-value]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def _check_split(images: np.ndarray, labels: np.ndarray, what: str) -> tuple[np.ndarray, np.ndarray]:
    images = np.asarray(images)
    labels = np.asarray(labels)
    if images.ndim == 3:  # (N, H, W) grayscale
        images = images[..., None]
    if images.ndim != 4:
        raise ValueError(f"{what}: images must be (N, H, W, C), got shape {images.shape}")
    if images.dtype != np.uint8:
        raise ValueError(f"{what}: images must be uint8 in 0..255, got dtype {images.dtype}")
    if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
        raise ValueError(
            f"{what}: labels must be (N,) with N = {images.shape[0]} images, got shape {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{what}: labels must be integers, got dtype {labels.dtype}")
    return images, labels.astype(np.int32)


def _held_out_split(n: int, n_test: int, seed: int = _SPLIT_SEED) -> tuple[np.ndarray, np.ndarray]:
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[n_test:]), np.sort(order[:n_test])


def from_arrays(
    x: np.ndarray,
    y: np.ndarray,
    x_test: np.ndarray | None = None,
    y_test: np.ndarray | None = None,
    *,
    name: str = "arrays",
    class_names: tuple[str, ...] | None = None,
    test_fraction: float = 0.2,
    flip_ok: bool = False,
) -> Dataset:
    """Builds a `Dataset` from in-memory uint8 arrays (a user's own data).

    Without `x_test`/`y_test`, a held-out test split of `test_fraction` is drawn with a fixed seed.
    """
    x, y = _check_split(x, y, f"{name} train")
    if (x_test is None) != (y_test is None):
        raise ValueError(f"{name}: give both x_test and y_test, or neither")
    if x_test is None:
        if not 0.0 < test_fraction < 1.0:
            raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
        tr, te = _held_out_split(len(y), max(1, int(round(test_fraction * len(y)))))
        x, y, x_test, y_test = x[tr], y[tr], x[te], y[te]
    x_test, y_test = _check_split(x_test, y_test, f"{name} test")
    if x_test.shape[1:] != x.shape[1:]:
        raise ValueError(f"{name}: train images {x.shape[1:]} and test images {x_test.shape[1:]} differ")
    num_classes = int(max(y.max(), y_test.max())) + 1
    if min(y.min(), y_test.min()) < 0:
        raise ValueError(f"{name}: labels must be >= 0")
    unseen = sorted(set(np.unique(y_test).tolist()) - set(np.unique(y).tolist()))
    if unseen:
        raise ValueError(f"{name}: test labels {unseen[:10]} never occur in the training labels "
                         f"(train labels {int(y.min())}..{int(y.max())}); are the splits from the same dataset?")
    if class_names is None:
        class_names = tuple(str(i) for i in range(num_classes))
    elif len(class_names) < num_classes:
        raise ValueError(f"{name}: {len(class_names)} class names for labels up to {num_classes - 1}")
    return Dataset(name, Split(x, y, "train"), Split(x_test, y_test, "test"), tuple(class_names), flip_ok)


def load_digits() -> Dataset:
    """scikit-learn's 1797 real 8x8 digits, values 0..16 rescaled to 0..255, seeded 1437/360 split."""
    from sklearn.datasets import load_digits as _sk_digits

    bunch = _sk_digits()
    images = np.round(bunch.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
    labels = bunch.target.astype(np.int32)
    tr, te = _held_out_split(len(labels), len(labels) - DIGITS_TRAIN_SIZE)
    return Dataset("digits", Split(images[tr], labels[tr], "train"), Split(images[te], labels[te], "test"),
                   tuple(str(i) for i in range(10)))


def load_npz(path: str | os.PathLike) -> Dataset:
    """Loads `x` (N,H,W,C uint8), `y` and optionally `x_test`/`y_test` from an npz file."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise ValueError(f"npz dataset {str(path)!r} does not exist")
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise ValueError(f"cannot read npz dataset {str(path)!r} ({e}); expected arrays x, y "
                         "[, x_test, y_test]") from e
    if "x" not in arrays or "y" not in arrays:
        raise ValueError(f"npz dataset {str(path)!r} must hold arrays 'x' and 'y', found {sorted(arrays)}")
    return from_arrays(arrays["x"], arrays["y"], arrays.get("x_test"), arrays.get("y_test"), name=f"npz:{path}")


def cache_dir() -> pathlib.Path:
    """Where decoded tfds splits are cached: `$ANATOMY_JAX_CACHE`, else `~/.cache/anatomy_jax`."""
    return pathlib.Path(os.environ.get("ANATOMY_JAX_CACHE", pathlib.Path.home() / ".cache" / "anatomy_jax"))


def _atomic_savez(path: pathlib.Path, **arrays: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npz.tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _prepare_hint(name: str) -> str:
    return (f"Prepare it once with network access and TensorFlow (pip install -e \".[prepare]\"; then "
            f"load_dataset({name!r}, download=True) or the experiment's default), or pass --data-dir / "
            "data_dir= pointing at a directory that holds it prepared in array_record format.")


def _read_tfds_split(builder, name: str, split: str, data_dir: str | None) -> tuple[np.ndarray, np.ndarray]:
    import tensorflow_datasets as tfds

    try:
        source = tfds.data_source(name, split=split, data_dir=data_dir, download=False)
        examples = source.__getitems__(list(range(len(source))))
        images = np.stack([e["image"] for e in examples])
        labels = np.array([e["label"] for e in examples], dtype=np.int32)
    except Exception as e:  # tfds raises many types for unreadable or wrongly formatted files
        raise ValueError(f"could not read {name} split {split!r} from {builder.data_dir}: {e}. "
                         "The files may be corrupt or in tfrecord format. " + _prepare_hint(name)) from e
    return images, labels


def load_tfds(name: str, *, data_dir: str | None = None, download: bool = True, use_cache: bool = True) -> Dataset:
    """Loads a tfds catalog dataset through `tfds.data_source` (array_record, no TensorFlow needed).

    If the dataset is not prepared in `data_dir` and `download` is true, it is downloaded and
    prepared first, which needs TensorFlow (the `prepare` extra) and network access.
    """
    import tensorflow_datasets as tfds

    if name not in TFDS_DATASETS:
        raise ValueError(f"unknown tfds dataset {name!r}; known: {', '.join(TFDS_DATASETS)}")
    try:
        builder = tfds.builder(name, data_dir=data_dir, file_format="array_record")
    except Exception as e:
        raise ValueError(f"cannot open tfds dataset {name!r} in {data_dir!r}: {e}") from e
    prepared = builder.is_prepared() if hasattr(builder, "is_prepared") else pathlib.Path(builder.data_dir).exists()
    if not prepared:
        if not download:
            raise ValueError(f"dataset {name!r} is not prepared in {builder.data_dir} (download=False). "
                             + _prepare_hint(name))
        if importlib.util.find_spec("tensorflow") is None:
            raise ValueError(f"dataset {name!r} is not prepared in {builder.data_dir}, and preparing it "
                             "needs TensorFlow, which is not installed. " + _prepare_hint(name))
        builder.download_and_prepare(file_format="array_record")
    version = str(builder.info.version)
    class_names = tuple(builder.info.features["label"].names)
    splits = {}
    for split in ("train", "test"):
        key = hashlib.sha1(str(pathlib.Path(builder.data_dir).resolve()).encode()).hexdigest()[:10]
        cached = cache_dir() / f"{name}-{version}-{split}-{key}.npz"
        images = labels = None
        if use_cache and cached.is_file():
            try:
                with np.load(cached, allow_pickle=False) as f:
                    images, labels = f["images"], f["labels"]
            except Exception:  # a damaged cache entry is rebuilt, not trusted
                images = labels = None
        if images is None:
            images, labels = _read_tfds_split(builder, name, split, data_dir)
            if use_cache:
                try:
                    _atomic_savez(cached, images=images, labels=labels)
                except OSError:
                    pass  # a read-only home directory only costs the cache
        images, labels = _check_split(images, labels, f"{name} {split}")
        splits[split] = Split(images, labels, split)
    return Dataset(name, splits["train"], splits["test"], class_names, name in _FLIP_OK)


def load_dataset(name: str, *, data_dir: str | None = None, download: bool = True) -> Dataset:
    """Loads a dataset by name: `digits`, a tfds name (see `TFDS_DATASETS`), or `npz:PATH`."""
    if name == "digits":
        return load_digits()
    if name.startswith("npz:"):
        return load_npz(name[len("npz:"):])
    if name in TFDS_DATASETS:
        return load_tfds(name, data_dir=data_dir, download=download)
    raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASET_NAMES)} or npz:PATH")


def subset(split: Split, n: int, seed: int = _SPLIT_SEED) -> Split:
    """The first `n` images of a fixed seeded shuffle of `split` (for quick runs and tests)."""
    if n >= len(split):
        return split
    idx = np.sort(np.random.default_rng(seed).permutation(len(split))[:n])
    return Split(split.images[idx], split.labels[idx], split.name)
