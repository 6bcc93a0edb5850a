"""The one exception type that means "the user's settings are bad" (CLI: message + exit 2)."""

from __future__ import annotations

import contextlib
from typing import Iterator


class SettingsError(ValueError):
    """Settings or input data that cannot work (a bad flag, a pattern larger than the image, a
    frequency that needs more images than exist). Scripts print it and exit with code 2; any other
    exception is an internal error and keeps its traceback."""


@contextlib.contextmanager
def settings_errors() -> Iterator[None]:
    """Inside this block a `ValueError` raised by validation is re-raised as a `SettingsError`.

    Wrap the preparation of a study (config checks, dataset loading, poison plans, mesh) in it, and
    nothing else: a ValueError during training is a bug and must not be reported as bad input.
    """
    try:
        yield
    except SettingsError:
        raise
    except ValueError as e:
        raise SettingsError(str(e)) from e
