"""Config fields with help text: frozen dataclasses whose `--help` the CLI generates."""

from __future__ import annotations

import dataclasses
from typing import Any


def flag(default: Any, text: str) -> Any:
    """A config field with a default and the help text `--help` shows."""
    return dataclasses.field(default=default, metadata={"help": text})
