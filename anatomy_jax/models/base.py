"""The one mechanism every model uses for named intermediate representations.

A model is a sequence of named stages (`layer_names`, in depth order, e.g. `stem`, `layer1`, ...,
`features`, `logits`). Each stage's parameters live under its name in the params pytree.

    logits = model.apply(variables, x)                                  # inputs -> logits
    logits, reps = model.apply(variables, x, capture=True)              # + {layer name: output}
    logits = model.apply(variables, h, start_after="layer2")            # run on from layer2's output

`start_after` is what model stitching needs: `h` is (a map of) the representation that stage
`start_after` outputs, and the model runs the stages after it. Inputs are float images in [0, 1],
(N, H, W, C); with `train=True`, batch-norm models use batch statistics and must be applied with
`mutable=["batch_stats"]`.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import flax.linen as nn
import jax.numpy as jnp

Stage = tuple[str, Callable[[str], Callable[..., Any]]]  # (name, factory(name) -> fn(h, train))


def channels(base: int, width: float) -> int:
    """`base` channels scaled by the width multiplier (at least 1)."""
    return max(1, int(round(base * width)))


class StagedNetwork(nn.Module):
    """Base class: subclasses implement `stages()`, a list of (name, factory) pairs."""

    num_classes: int = 10
    width: float = 1.0
    dtype: Any = jnp.float32
    # Mesh axis over which batch norm averages its batch statistics (data parallelism inside
    # shard_map: the whole batch's statistics, as on one device); None = this device's batch.
    norm_axis: str | None = None

    def stages(self) -> Sequence[Stage]:
        raise NotImplementedError

    @property
    def layer_names(self) -> tuple[str, ...]:
        """Names of the intermediate representations, in depth order (inputs excluded)."""
        return tuple(name for name, _ in self.stages())

    @nn.compact
    def __call__(self, x, train: bool = False, *, start_after: str | None = None, capture: bool = False):
        names = self.layer_names
        if start_after is not None and start_after not in names:
            raise ValueError(f"unknown layer {start_after!r}; this model has {', '.join(names)}")
        reps = {}
        active = start_after is None
        h = x
        for name, factory in self.stages():
            if active:
                h = factory(name)(h, train)
                reps[name] = h
            elif name == start_after:
                active = True
        return (h, reps) if capture else h


# ---- building blocks shared by the architectures -------------------------------------------


def max_pool_2x2(x):
    """2x2 max pooling with stride 2 and SAME padding, as a reshape + max.

    Same values as `nn.max_pool(x, (2, 2), (2, 2), padding="SAME")`, but its gradient avoids
    XLA's select-and-scatter, which made the small CNN's training step 2x slower on CPU.
    """
    n, h, w, c = x.shape
    if h % 2 or w % 2:
        x = jnp.pad(x, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), constant_values=-jnp.inf)
    n, h, w, c = x.shape
    return x.reshape(n, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


def batch_norm(train: bool, dtype: Any, axis_name: str | None = None, name: str | None = None) -> nn.BatchNorm:
    """Batch norm as every model uses it (momentum 0.9; statistics averaged over `axis_name`).

    The variance is the mean of squared deviations from the (whole-batch) mean, not E[x^2] - E[x]^2:
    the fast form cancels catastrophically for channels with a small variance, where the order of a
    data-parallel reduction then changed the normalised output by percent."""
    return nn.BatchNorm(use_running_average=not train, momentum=0.9, dtype=dtype, axis_name=axis_name,
                        use_fast_variance=False, name=name)


class ConvNormAct(nn.Module):
    """Conv (3x3 by default) -> optional batch norm -> ReLU -> optional 2x2 max pool."""

    features: int
    kernel: int = 3
    stride: int = 1
    norm: bool = True
    pool: bool = False
    dtype: Any = jnp.float32
    norm_axis: str | None = None

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.Conv(self.features, (self.kernel, self.kernel), (self.stride, self.stride), padding="SAME",
                    use_bias=not self.norm, dtype=self.dtype)(x)
        if self.norm:
            x = batch_norm(train, self.dtype, self.norm_axis)(x)
        x = nn.relu(x)
        if self.pool:
            x = max_pool_2x2(x)
        return x


class ConvStack(nn.Module):
    """Several ConvNormAct layers (one per entry of `features`), then an optional 2x2 max pool."""

    features: Sequence[int]
    norm: bool = True
    pool: bool = True
    dtype: Any = jnp.float32
    norm_axis: str | None = None

    @nn.compact
    def __call__(self, x, train: bool = False):
        for i, f in enumerate(self.features):
            last = i == len(self.features) - 1
            x = ConvNormAct(f, norm=self.norm, pool=self.pool and last, dtype=self.dtype,
                            norm_axis=self.norm_axis)(x, train)
        return x


class DenseAct(nn.Module):
    """Flatten (if needed) -> Dense -> ReLU."""

    features: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = x.reshape((x.shape[0], -1))
        return nn.relu(nn.Dense(self.features, dtype=self.dtype)(x))


class Flatten(nn.Module):
    """(N, ...) -> (N, D)."""

    @nn.compact
    def __call__(self, x, train: bool = False):
        return x.reshape((x.shape[0], -1))


class GlobalPool(nn.Module):
    """Global average pooling of a (N, H, W, C) map into (N, C) features."""

    @nn.compact
    def __call__(self, x, train: bool = False):
        return jnp.mean(x, axis=(1, 2))


class Logits(nn.Module):
    """Flatten (if needed) -> Dense to class scores, computed in float32."""

    num_classes: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = x.reshape((x.shape[0], -1))
        return nn.Dense(self.num_classes, dtype=jnp.float32)(x.astype(jnp.float32))
