"""Strict JSON results: atomic writes, NaN/inf as null."""

from __future__ import annotations

import json
import os
import pathlib
import tempfile
from typing import Any, Sequence

import numpy as np


def write_json(path: str | os.PathLike, payload: Any) -> None:
    """Writes strict JSON (NaN/inf refused) through a temporary file and an atomic rename, so a
    reader (or a run killed mid-write) never sees a partial file."""
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
