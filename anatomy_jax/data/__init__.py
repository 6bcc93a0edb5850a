"""Datasets (uint8 NHWC arrays) and on-device augmentation."""

from anatomy_jax.data.augment import augment, random_crop, random_flip
from anatomy_jax.data.datasets import (
    DATASET_NAMES,
    TFDS_DATASETS,
    Dataset,
    Split,
    cache_dir,
    from_arrays,
    load_dataset,
    load_digits,
    load_npz,
    load_tfds,
    subset,
)

__all__ = [
    "DATASET_NAMES", "TFDS_DATASETS", "Dataset", "Split", "augment", "cache_dir", "from_arrays",
    "load_dataset", "load_digits", "load_npz", "load_tfds", "random_crop", "random_flip", "subset",
]
