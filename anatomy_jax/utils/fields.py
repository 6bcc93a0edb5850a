"""Config fields with help text: frozen dataclasses whose `--help` the CLI generates."""

from __future__ import annotations

import dataclasses
from typing import Any


def flag(default: Any, text: str, *, repeat: bool = False) -> Any:
    """A config field with a default and the help text `--help` shows.

    repeat: the flag may be given several times (`--pattern-spec A --pattern-spec B`), each time one
    whole value (commas included), collected in order; for `tuple[...]` fields whose items may
    themselves contain commas. The default must then be a tuple, replaced when the flag is given.
    """
    if repeat and not isinstance(default, tuple):
        raise ValueError(f"a repeated flag needs a tuple default, got {default!r}")
    return dataclasses.field(default=default, metadata={"help": text, "repeat": repeat})
