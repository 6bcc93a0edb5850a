"""Config fields that every study shares: the data, how runs share devices, where results go.

Study configs are frozen dataclasses that combine these with `anatomy_jax.train.TrainConfig` (or
build TrainConfigs themselves); the CLI is generated from their fields.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from anatomy_jax.data import DATASET_NAMES, Dataset, load_dataset, subset
from anatomy_jax.experiment.study import SweepOptions
from anatomy_jax.train import STRATEGIES
from anatomy_jax.utils.fields import flag


@dataclasses.dataclass(frozen=True)
class DataOptions:
    """Which dataset a study trains on."""

    dataset: str = flag("digits", f"dataset: {', '.join(DATASET_NAMES)} (tfds), or npz:PATH with arrays x, y "
                                  "[, x_test, y_test]")
    data_dir: str | None = flag(None, "tfds data directory holding prepared datasets (default: tfds's own)")
    train_size: int = flag(0, "use only this many training images (fixed seeded subset; 0 = all)")
    test_size: int = flag(0, "evaluate on only this many test images (fixed seeded subset; 0 = all)")
    flip: bool | None = flag(None, "horizontal-flip augmentation (auto: the dataset's default: on for CIFAR-10, off "
                                   "for digits, MNIST and npz: data)")

    def validate_data(self) -> None:
        if self.dataset not in DATASET_NAMES and not self.dataset.startswith("npz:"):
            raise ValueError(f"unknown dataset {self.dataset!r}; choose one of {', '.join(DATASET_NAMES)} or npz:PATH")
        if self.train_size < 0 or self.test_size < 0:
            raise ValueError(f"train_size and test_size must be >= 0, got {self.train_size} and {self.test_size}")

    def load_data(self) -> Dataset:
        """The dataset, subsampled to `train_size` and `test_size`."""
        data = load_dataset(self.dataset, data_dir=self.data_dir, download=self.data_dir is None)
        if self.train_size:
            data = dataclasses.replace(data, train=subset(data.train, self.train_size))
        if self.test_size:
            data = dataclasses.replace(data, test=subset(data.test, self.test_size))
        if self.flip is not None:
            data = dataclasses.replace(data, flip_ok=self.flip)
        return data


@dataclasses.dataclass(frozen=True)
class DeviceOptions:
    """How the runs of a study share the devices."""

    strategy: str = flag("auto", "how the runs train together: vmap (stacked runs, one program), loop (each run's "
                                 "own jitted steps, interleaved), auto (loop on one CPU device, else vmap)")
    runs_per_device: int = flag(0, "runs trained at once per device; a larger grid runs in chunks (0 = auto: "
                                   "as many as fit in half the device memory)")
    devices: int = flag(0, "devices to use, the run axis sharded over them (0 = all)")
    data_parallel: int = flag(1, "devices that split each run's batch (for models too big for one device per run)")

    def validate_devices(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {self.strategy!r}; choose one of {', '.join(STRATEGIES)}")
        if self.runs_per_device < 0 or self.devices < 0 or self.data_parallel < 1:
            raise ValueError("runs_per_device and devices must be >= 0 and data_parallel >= 1")

    def sweep_options(self) -> SweepOptions:
        return SweepOptions(self.strategy, self.runs_per_device, self.devices, self.data_parallel)


@dataclasses.dataclass(frozen=True)
class OutputOptions:
    """Where a study writes, and what it does with results already there."""

    out: str | None = flag(None, "output directory (default: runs/<experiment>/<timestamp>)")
    resume: bool = flag(False, "continue the study in --out from its latest checkpoint")
    overwrite: bool = flag(False, "replace the results in --out")

    def validate_output(self) -> None:
        if self.resume and self.overwrite:
            raise ValueError("choose one of --resume and --overwrite, not both")


# Settings that may change between a study and its resumption (the layout comes from the checkpoint).
NOT_COMPARED_ON_RESUME = ("out", "resume", "overwrite", "keep_checkpoints", "strategy", "runs_per_device",
                          "devices", "data_parallel", "multihost")


def resumable_settings(config: Any) -> dict[str, Any]:
    """The settings a resumed study must share with the one it continues (JSON-normalised)."""
    settings = {k: v for k, v in dataclasses.asdict(config).items() if k not in NOT_COMPARED_ON_RESUME}
    return json.loads(json.dumps(settings))
