"""Bottom utilities shared by every layer (plots included): config fields, JSON I/O, errors."""

from anatomy_jax.utils.errors import SettingsError, settings_errors
from anatomy_jax.utils.fields import flag
from anatomy_jax.utils.serialize import json_matrix, matrix_from_json, write_json

__all__ = ["SettingsError", "flag", "json_matrix", "matrix_from_json", "settings_errors", "write_json"]
