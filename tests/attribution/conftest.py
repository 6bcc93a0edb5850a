"""Fixtures and helpers shared by the attribution tests (`BOX`, `box_readout`: imported by
test_perturbation.py and test_options.py)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest

BOX = (4, 18, 12, 26)  # an 8x8 box in a 32x32 image: area 64 / 1024 = 0.0625


def box_readout(variables, x):
    """A linear model that reads only BOX: logit 0 = sum(x[BOX]), logit 1 = 0."""
    r0, c0, r1, c1 = BOX
    z = x[:, r0:r1, c0:c1].sum(axis=(1, 2, 3))
    return jnp.stack([z, jnp.zeros_like(z)], axis=1)


@pytest.fixture(scope="module")
def box_images() -> jax.Array:
    """(2, 32, 32, 1) uniform in [0.5, 1]: inputs of the linear box read-out."""
    return jax.random.uniform(jax.random.key(1), (2, 32, 32, 1), minval=0.5, maxval=1.0)
