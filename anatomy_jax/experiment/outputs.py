"""Output directories and results files: never overwrite silently, always write atomically."""

from __future__ import annotations

import os
import pathlib
import platform
import shutil
import sys
import time
from typing import Any

from anatomy_jax.utils.errors import SettingsError

RESULTS_FILE = "results.json"
CHECKPOINT_DIR = "checkpoints"  # orbax's integer step directories, nothing else
ZOO_DIR = "zoo"  # a model zoo's checkpoints, one folder per architecture (representation comparison)


class OutputExistsError(SettingsError):
    """The output directory already holds results and neither resume nor overwrite was asked for."""


def default_out_dir(experiment: str) -> pathlib.Path:
    """`runs/<experiment>/<timestamp>`: where an experiment writes when --out is not given."""
    return pathlib.Path("runs") / experiment / time.strftime("%Y%m%d-%H%M%S")


def prepare_output_dir(out: str | os.PathLike, *, resume: bool, overwrite: bool,
                       primary: bool = True) -> pathlib.Path:
    """Creates `out`, refusing (OutputExistsError) if it holds results unless resuming/overwriting.

    `overwrite` removes earlier results, figures and checkpoints first; `resume` keeps them. In a
    multi-process job every process checks, and only the `primary` one removes or creates.
    """
    if resume and overwrite:
        raise ValueError("choose one of --resume and --overwrite, not both")
    out = pathlib.Path(out)
    existing = [p for p in (out / RESULTS_FILE, out / CHECKPOINT_DIR, out / ZOO_DIR) if p.exists()]
    if existing and not (resume or overwrite):
        raise OutputExistsError(
            f"{out} already holds results ({', '.join(p.name for p in existing)}); pass --resume to continue "
            "that run, --overwrite to replace it, or choose another --out")
    if not primary:
        return out
    if overwrite:
        for p in existing:
            shutil.rmtree(p) if p.is_dir() else p.unlink()
        for png in out.glob("*.png"):
            png.unlink()
    out.mkdir(parents=True, exist_ok=True)
    return out


def environment() -> dict[str, Any]:
    """Library versions, device and command line, recorded with every result."""
    import flax
    import jax
    import numpy
    import optax
    import orbax.checkpoint

    import anatomy_jax

    devices = jax.devices()
    return {
        "versions": {"anatomy_jax": anatomy_jax.__version__, "python": platform.python_version(),
                     "jax": jax.__version__, "flax": flax.__version__, "optax": optax.__version__,
                     "orbax_checkpoint": orbax.checkpoint.__version__, "numpy": numpy.__version__},
        "device": {"platform": devices[0].platform, "kind": devices[0].device_kind, "count": len(devices)},
        "command": " ".join([os.path.basename(sys.argv[0])] + sys.argv[1:]),
    }
