"""Fixtures shared by the attribution tests."""

from __future__ import annotations

import jax
import pytest


@pytest.fixture(scope="module")
def box_images() -> jax.Array:
    """(2, 32, 32, 1) uniform in [0.5, 1]: inputs of the linear box read-out."""
    return jax.random.uniform(jax.random.key(1), (2, 32, 32, 1), minval=0.5, maxval=1.0)
