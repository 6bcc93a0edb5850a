"""Per-example gradients and the alignment statistics of groups of examples.

`per_example_grads(loss_fn, params, inputs, labels)` vmaps `grad` over the example axis, in chunks
of `chunk_size` examples (`lax.map` over chunks) so memory stays bounded. For batch-norm models,
pass a `loss_fn` that applies the model with its running statistics (`train=False`): a single
example has no batch statistics, and the running ones make each example's gradient independent
of the others in the batch (`model_loss_fn` builds such a function).

`gradient_alignment(grads, groups, num_groups, update=None)` summarises per-example gradients
g_i (flattened to vectors) split into groups (e.g. 0 = clean, k = carries pattern k; or
relabelled vs not). With G_g = sum of g_i in group g, G = sum_g G_g and n_g the group size:

* `mean_grad_norm[g]`      = ||G_g / n_g||
* `mean_cosine[g, h]`      = cos(G_g / n_g, G_h / n_h)                 (cosine between group means)
* `coherence[g]`           = mean over pairs i != j in g of cos(g_i, g_j)
                           = (||sum_i u_i||^2 - n_g) / (n_g (n_g - 1)),   u_i = g_i / ||g_i||
                             (no n x n matrix is formed)
* `norm_share[g]`          = ||G_g|| / ||G||                            (the group's share of the batch gradient)
* `projection_share[g]`    = <G_g, G> / ||G||^2                         (sums to 1 over groups)
* `update_share[g]`        = <G_g, d> / <G, d>, d = -update             (the same split of the optimizer's actual
                             step, momentum included; sums to 1 over groups)
* `update_cosine[g]`       = cos(G_g, d)
"""

from __future__ import annotations

from typing import Any, Callable

import chex
import jax
import jax.numpy as jnp

LossFn = Callable[[Any, jax.Array, jax.Array], jax.Array]  # (params, x, y) -> mean loss of the batch


def select_params(params: Any, keep: Callable[[str], bool]) -> tuple[Any, Any]:
    """Splits `params` into (kept, frozen): leaves whose "/"-joined path satisfies `keep` stay in
    `kept` (others become None there) and vice versa. `merge_params` puts them back together."""
    def name(path):
        return "/".join(str(getattr(p, "key", getattr(p, "idx", p))) for p in path)

    kept = jax.tree_util.tree_map_with_path(lambda p, x: x if keep(name(p)) else None, params)
    frozen = jax.tree_util.tree_map_with_path(lambda p, x: None if keep(name(p)) else x, params)
    return kept, frozen


def merge_params(kept: Any, frozen: Any) -> Any:
    """Inverse of `select_params`."""
    return jax.tree.map(lambda a, b: b if a is None else a, kept, frozen, is_leaf=lambda x: x is None)


def per_example_grads(loss_fn: LossFn, params: Any, inputs: jax.Array, labels: jax.Array,
                      chunk_size: int | None = None, keep: Callable[[str], bool] | None = None,
                      unroll_chunks: bool | None = None) -> Any:
    """Gradients of `loss_fn` for every example: a pytree like `params` (or like the subset that
    `keep(path)` selects; the other leaves are None) with a leading example axis.

    `loss_fn(params, x, y)` is the mean loss of a batch (leading axis = examples); each example is
    passed as a batch of one. `chunk_size` bounds how many examples are differentiated at once.
    Chunks run in a `lax.map` loop (memory bounded at any batch size; the default on GPU/TPU) or,
    with `unroll_chunks`, as a static sequence of vmapped chunks (the default on CPU, where XLA runs
    convolution gradients inside loops several times slower: 35 vs 412 examples/s for the peer's
    small CNN at batch 128 in chunks of 16; see benchmarks/per_example_grads.py).
    """
    chex.assert_equal_shape_prefix((inputs, labels), 1)
    n = inputs.shape[0]
    if keep is not None:
        kept, frozen = select_params(params, keep)
        grad_fn = jax.grad(lambda k, x, y: loss_fn(merge_params(k, frozen), x[None], y[None]))
        target = kept
    else:
        grad_fn = jax.grad(lambda p, x, y: loss_fn(p, x[None], y[None]))
        target = params
    one_chunk = jax.vmap(grad_fn, in_axes=(None, 0, 0))
    if chunk_size is None or chunk_size >= n:
        return one_chunk(target, inputs, labels)
    if chunk_size <= 0:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    if unroll_chunks is None:
        unroll_chunks = jax.default_backend() == "cpu"
    if unroll_chunks:
        parts = [one_chunk(target, inputs[i:i + chunk_size], labels[i:i + chunk_size]) for i in range(0, n, chunk_size)]
        return jax.tree.map(lambda *chunks: jnp.concatenate(chunks), *parts)
    pad = (-n) % chunk_size
    xs = jnp.pad(inputs, [(0, pad)] + [(0, 0)] * (inputs.ndim - 1))
    ys = jnp.pad(labels, [(0, pad)] + [(0, 0)] * (labels.ndim - 1))
    xs = xs.reshape(-1, chunk_size, *inputs.shape[1:])
    ys = ys.reshape(-1, chunk_size, *labels.shape[1:])
    grads = jax.lax.map(lambda xy: one_chunk(target, *xy), (xs, ys))
    return jax.tree.map(lambda g: g.reshape(-1, *g.shape[2:])[:n], grads)


def flatten_per_example(grads: Any) -> jax.Array:
    """(N, D) matrix of per-example gradients (None leaves are skipped)."""
    leaves = [g for g in jax.tree.leaves(grads) if g is not None]
    return jnp.concatenate([g.reshape(g.shape[0], -1) for g in leaves], axis=1)


def _flatten_one(tree: Any) -> jax.Array:
    return jnp.concatenate([x.reshape(-1) for x in jax.tree.leaves(tree) if x is not None])


def gradient_alignment(grads: Any, groups: jax.Array, num_groups: int, update: Any = None,
                       eps: float = 1e-12) -> dict[str, jax.Array]:
    """Alignment statistics of per-example gradients split into groups (see the module docstring).

    grads: per-example gradient pytree (leading axis N) or an (N, D) matrix; groups: (N,) ints in
    [0, num_groups) (negative ids are ignored); update: the optimizer's update as a pytree like one
    example's gradient (or a (D,) vector), optional. Groups with fewer than 1 (2 for coherence)
    examples give 0. Jittable with static `num_groups`.
    """
    g = grads if isinstance(grads, jax.Array) and grads.ndim == 2 else flatten_per_example(grads)
    chex.assert_shape(groups, (g.shape[0],))
    onehot = jax.nn.one_hot(groups, num_groups, dtype=g.dtype)  # (N, K); negative ids -> all zeros
    counts = onehot.sum(0)
    sums = onehot.T @ g  # (K, D): G_g
    total = sums.sum(0)  # G (of the grouped examples)
    means = sums / jnp.maximum(counts, 1.0)[:, None]
    mean_norms = jnp.linalg.norm(means, axis=1)
    mean_cosine = (means @ means.T) / jnp.maximum(jnp.outer(mean_norms, mean_norms), eps)
    unit = g / jnp.maximum(jnp.linalg.norm(g, axis=1, keepdims=True), eps)
    unit_sums = onehot.T @ unit
    coherence = jnp.where(counts > 1, (jnp.sum(unit_sums ** 2, axis=1) - counts)
                          / jnp.maximum(counts * (counts - 1), 1.0), 0.0)
    total_sq = jnp.maximum(jnp.dot(total, total), eps)
    out = {
        "count": counts,
        "mean_grad_norm": mean_norms,
        "mean_cosine": mean_cosine,
        "coherence": coherence,
        "norm_share": jnp.linalg.norm(sums, axis=1) / jnp.sqrt(total_sq),
        "projection_share": (sums @ total) / total_sq,
    }
    if update is not None:
        d = -(update if isinstance(update, jax.Array) and update.ndim == 1 else _flatten_one(update))
        chex.assert_shape(d, (g.shape[1],))
        along = sums @ d
        out["update_share"] = along / jnp.where(jnp.abs(along.sum()) > eps, along.sum(), eps)
        out["update_cosine"] = along / jnp.maximum(jnp.linalg.norm(sums, axis=1) * jnp.linalg.norm(d), eps)
    return out


def saliency_mass(loss_fn: LossFn, params: Any, inputs: jax.Array, labels: jax.Array,
                  mask: jax.Array, eps: float = 1e-12) -> dict[str, jax.Array]:
    """Share of the input-gradient (saliency) mass inside `mask`:
    sum |d L_i / d x_i| * mask / sum |d L_i / d x_i| per image, and its mean.

    mask: (H, W, 1) or (N, H, W, 1) (or full image shape), broadcast over channels.
    """
    chex.assert_rank(inputs, 4)
    saliency = jnp.abs(jax.vmap(jax.grad(lambda x, y: loss_fn(params, x[None], y[None])))(inputs, labels))
    mask = jnp.broadcast_to(mask, inputs.shape)
    inside = (saliency * mask).sum(axis=(1, 2, 3))
    share = inside / jnp.maximum(saliency.sum(axis=(1, 2, 3)), eps)
    return {"per_image": share, "mean": share.mean()}


def model_loss_fn(apply_fn: Callable[..., jax.Array], batch_stats: Any = None) -> LossFn:
    """A mean cross-entropy `loss_fn(params, x, y)` for `apply_fn(variables, x)` that uses the
    model's running batch statistics (inference mode), as per-example gradients require."""
    import optax

    def loss(params, x, y):
        variables = {"params": params, **({"batch_stats": batch_stats} if batch_stats else {})}
        logits = apply_fn(variables, x)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    return loss
