"""Output directories and results files: never overwrite silently, always write atomically."""

from __future__ import annotations

import json
import os
import pathlib
import platform
import shutil
import sys
import tempfile
import time
from typing import Any, Sequence

import numpy as np

RESULTS_FILE = "results.json"
CHECKPOINT_DIR = "checkpoints"


class OutputExistsError(ValueError):
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
    existing = [p for p in (out / RESULTS_FILE, out / CHECKPOINT_DIR) if p.exists()]
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


def write_json(path: str | os.PathLike, payload: Any) -> None:
    """Writes strict JSON (NaN/inf refused) through a temporary file and an atomic rename."""
    path = pathlib.Path(path)
    text = json.dumps(payload, indent=1, allow_nan=False)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text + "\n")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def json_matrix(matrix: Any) -> list[list[float | None]]:
    """A 2-D array as JSON rows, NaN and inf as None (strict JSON has neither)."""
    return [[float(v) if np.isfinite(v) else None for v in row] for row in np.asarray(matrix, float)]


def matrix_from_json(rows: Sequence[Sequence[float | None]]) -> np.ndarray:
    """The inverse of `json_matrix`: JSON rows as a float array, None as NaN."""
    return np.array([[np.nan if v is None else v for v in row] for row in rows], dtype=float)


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
