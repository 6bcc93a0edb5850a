"""Per-example gradients and the alignment statistics of groups of examples.

`per_example_grads(loss_fn, params, inputs, labels)` vmaps `grad` over the example axis, in chunks
of `chunk_size` examples (`lax.map` over chunks) so memory stays bounded. For batch-norm models,
pass a `loss_fn` that applies the model with its running statistics (`train=False`): a single
example has no batch statistics, and the running ones make each example's gradient independent
of the others in the batch (`model_loss_fn` builds such a function).

`gradient_alignment(grads, groups, num_groups, update=None, weights=None)` summarises per-example
gradients g_i (flattened to vectors) split into groups (e.g. 0 = clean, k = carries pattern k; or
relabelled vs not), each example weighted by w_i >= 0 (default 1). Weights let a probe batch whose
groups were sampled at different rates stand for the training set's real composition. With
G_g = sum_{i in g} w_i g_i, n_g = sum_{i in g} w_i (the group's weight), S_g = sum_{i in g} w_i ||g_i||^2,
G = sum_g G_g, and E_w the w-weighted mean over a group's examples:

* `count[g]`                 = number of examples in g (unweighted);  `weight[g]` = n_g
* `mean_grad_norm[g]`        = ||G_g / n_g|| = ||E_w[g]||
* `mean_cosine[g, h]`        = cos(G_g / n_g, G_h / n_h)                 (cosine between group means)
* `coherence[g]`             = alpha_g = ||E_w[g]||^2 / E_w[||g||^2] = ||G_g||^2 / (n_g S_g)
                               (Chatterjee & Zielinski, "Coherent gradients", ICLR 2020; "On the
                               generalization mystery", 2022): 1 for identical gradients, 1/n for n
                               orthogonal ones of equal norm, 0 for pairs g, -g; 0 for an empty group
                               or one whose gradients are all zero
* `coherence_overall`        = the same alpha over all grouped examples: ||G||^2 / (sum n_g sum S_g)
* `mean_pairwise_cosine[g]`  = mean over pairs i != j in g of cos(g_i, g_j)  (unweighted; a zero
                               gradient has cosine 0 with everything)
                             = (||sum_i u_i||^2 - sum_i ||u_i||^2) / (c_g (c_g - 1)),  u_i = g_i / ||g_i||,
                               c_g = count[g]  (no c x c matrix is formed)
* `norm_share[g]`            = ||G_g|| / ||G||                            (the group's share of the batch gradient)
* `projection_share[g]`      = <G_g, G> / ||G||^2                         (sums to 1 over groups)
* `update_share[g]`          = <G_g, d> / <G, d>, d = -update             (the same split of the optimizer's actual
                               step, momentum included; sums to 1 over groups)
* `update_cosine[g]`         = cos(G_g, d)

Every statistic is a function of per-group sums that add over disjoint sets of examples
(`alignment_sums`), so a probe can accumulate them chunk by chunk without holding all per-example
gradients (`alignment_statistics` turns the sums into the statistics). `layer_order` names a
network's layers from input to output, for statistics restricted to one layer's parameters.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

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


class AlignmentSums(NamedTuple):
    """Per-group sums over examples that `alignment_statistics` needs (K groups, D parameters).
    Sums of disjoint sets of examples add leaf by leaf (`jax.tree.map(jnp.add, a, b)`)."""

    count: jax.Array  # (K,) number of examples
    weight: jax.Array  # (K,) n_g = sum w_i
    grad_sum: jax.Array  # (K, D) G_g = sum w_i g_i
    sq_norm_sum: jax.Array  # (K,) S_g = sum w_i ||g_i||^2
    unit_sum: jax.Array  # (K, D) sum u_i, u_i = g_i / ||g_i|| (0 for a zero gradient)
    unit_sq_sum: jax.Array  # (K,) sum ||u_i||^2 (the number of nonzero gradients)


def alignment_sums(g: jax.Array, groups: jax.Array, num_groups: int, weights: jax.Array | None = None,
                   eps: float = 1e-12) -> AlignmentSums:
    """The per-group sums of an (N, D) matrix of per-example gradients; `groups` (N,) ints in
    [0, num_groups) (negative ids are left out), `weights` (N,) >= 0 (default 1)."""
    chex.assert_rank(g, 2)
    chex.assert_shape(groups, (g.shape[0],))
    w = jnp.ones(g.shape[0], g.dtype) if weights is None else jnp.asarray(weights, g.dtype)
    chex.assert_shape(w, (g.shape[0],))
    onehot = jax.nn.one_hot(groups, num_groups, dtype=g.dtype)  # (N, K); negative ids -> all zeros
    sq_norms = jnp.sum(g * g, axis=1)
    norms = jnp.sqrt(sq_norms)
    unit = g / jnp.maximum(norms, eps)[:, None]
    return AlignmentSums(count=onehot.sum(0), weight=onehot.T @ w, grad_sum=onehot.T @ (w[:, None] * g),
                         sq_norm_sum=onehot.T @ (w * sq_norms), unit_sum=onehot.T @ unit,
                         unit_sq_sum=onehot.T @ jnp.sum(unit * unit, axis=1))


def _ratio(num: jax.Array, den: jax.Array) -> jax.Array:
    """num / den where den > 0, else 0 (no NaN or inf, also in gradients)."""
    positive = den > 0
    return jnp.where(positive, num / jnp.where(positive, den, 1.0), 0.0)


def alignment_statistics(sums: AlignmentSums, update: jax.Array | None = None,
                         eps: float = 1e-12) -> dict[str, jax.Array]:
    """The statistics of the module docstring from per-group sums; `update`: the optimizer's
    update as a (D,) vector, optional (adds `update_share` and `update_cosine`)."""
    n, big_g = sums.weight, sums.grad_sum
    means = big_g / jnp.where(n > 0, n, 1.0)[:, None]
    mean_norms = jnp.linalg.norm(means, axis=1)
    total = big_g.sum(0)  # G (of the grouped examples)
    total_sq = jnp.maximum(jnp.dot(total, total), eps)
    counts = sums.count
    out = {
        "count": counts,
        "weight": n,
        "mean_grad_norm": mean_norms,
        "mean_cosine": (means @ means.T) / jnp.maximum(jnp.outer(mean_norms, mean_norms), eps),
        "coherence": jnp.clip(_ratio(jnp.sum(big_g ** 2, axis=1), n * sums.sq_norm_sum), 0.0, 1.0),
        "coherence_overall": jnp.clip(_ratio(jnp.dot(total, total), n.sum() * sums.sq_norm_sum.sum()), 0.0, 1.0),
        "mean_pairwise_cosine": _ratio(jnp.sum(sums.unit_sum ** 2, axis=1) - sums.unit_sq_sum,
                                       jnp.where(counts > 1, counts * (counts - 1), 0.0)),
        "norm_share": jnp.linalg.norm(big_g, axis=1) / jnp.sqrt(total_sq),
        "projection_share": (big_g @ total) / total_sq,
    }
    if update is not None:
        d = -update
        chex.assert_shape(d, (big_g.shape[1],))
        along = big_g @ d
        out["update_share"] = along / jnp.where(jnp.abs(along.sum()) > eps, along.sum(), eps)
        out["update_cosine"] = along / jnp.maximum(jnp.linalg.norm(big_g, axis=1) * jnp.linalg.norm(d), eps)
    return out


def gradient_alignment(grads: Any, groups: jax.Array, num_groups: int, update: Any = None,
                       weights: jax.Array | None = None, eps: float = 1e-12) -> dict[str, jax.Array]:
    """Alignment statistics of per-example gradients split into weighted groups (see the module
    docstring).

    grads: per-example gradient pytree (leading axis N; None leaves are skipped) or an (N, D)
    matrix; groups: (N,) ints in [0, num_groups) (negative ids are ignored); update: the
    optimizer's update as a pytree like one example's gradient (or a (D,) vector), optional;
    weights: (N,) >= 0, default all ones. Empty groups (and, for `mean_pairwise_cosine`, groups of
    one example) give 0. Jittable with static `num_groups`.
    """
    g = grads if isinstance(grads, jax.Array) and grads.ndim == 2 else flatten_per_example(grads)
    d = None
    if update is not None:
        d = update if isinstance(update, jax.Array) and update.ndim == 1 else _flatten_one(update)
    return alignment_statistics(alignment_sums(g, groups, num_groups, weights, eps), d, eps)


def layer_order(loss_fn: Callable[..., jax.Array], params: Any, *args: Any) -> tuple[str, ...]:
    """The layers of `params` in the order the computation `loss_fn(params, *args)` first uses
    them (a layer is a leaf's "/"-joined path without its last key, e.g. "conv1/Conv_0").

    Path order is no guide to depth (ResNet's "stem" sorts after "layer1"), so this reads the
    order from the traced program: `params` and `args` may be abstract (`jax.ShapeDtypeStruct`).
    """
    from jax.extend import core as jcore

    leaves = jax.tree_util.tree_flatten_with_path(params)[0]
    names = ["/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path[:-1]) for path, _ in leaves]
    closed = jax.make_jaxpr(loss_fn)(params, *args)
    first: dict[int, int] = {}
    counter = [0]

    def visit(jaxpr, env: dict[int, int]) -> None:
        for eqn in jaxpr.eqns:
            counter[0] += 1
            subs = [p for p in eqn.params.values() if isinstance(p, (jcore.Jaxpr, jcore.ClosedJaxpr))]
            sub = subs[0].jaxpr if len(subs) == 1 and isinstance(subs[0], jcore.ClosedJaxpr) else (
                subs[0] if len(subs) == 1 else None)
            if sub is not None and len(sub.invars) == len(eqn.invars):  # pjit, custom_jvp, remat: follow inside
                visit(sub, {id(iv): env[id(v)] for v, iv in zip(eqn.invars, sub.invars) if id(v) in env})
                continue
            for v in eqn.invars:
                if id(v) in env:
                    first.setdefault(env[id(v)], counter[0])

    visit(closed.jaxpr, {id(v): i for i, v in enumerate(closed.jaxpr.invars[:len(leaves)])})
    order: list[str] = []
    for leaf in sorted(first, key=first.get):
        if names[leaf] not in order:
            order.append(names[leaf])
    return tuple(order)


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
