"""One predictive pattern per class, searched for every class at once (Zhao et al. 2021, seed 002).

For class k the search minimises, over images x of the other classes,

    CE(f((1 - m) x + m p), k) + lambda_k * mean(m) [+ tv_weight * TV(m)] [+ canvas_weight * ||p - canvas_k||^2]

with m = tanh(a) / 2 + 1/2 (H x W, shared over channels) and p = tanh(b) / 2 + 1/2 (H x W x C),
Adam on (a, b). The weight lambda_k follows Neural Cleanse's schedule (Wang et al. 2019,
`visualizer.py`): every `check_every` steps (an "epoch") the attack success rate averaged over
those steps' batches is compared with `target_asr`; after `patience` checks in a row at or above
it lambda is multiplied by `lambda_up` (a smaller mask is affordable), after `patience` checks
below it lambda is divided by `lambda_down` (the pattern must work first). Starting from
`init_lambda = 0`, lambda is set to `lambda_start` once the target has been reached for
`patience` checks (Neural Cleanse's cost initialisation). The result is the smallest-mean mask
among the checks that reached the target (the last one if none did: `reached` says which).

A fixed lambda either leaves the mask diffuse over class features (too small) or never reaches
the target (too large); the schedule finds the smallest mask that still flips the label.

Every class runs in one compiled program: the per-class search is vmapped over classes (chunks
of `class_chunk` classes when memory requires), each class with its own key `fold_in(key, k)`,
so searching a subset of classes gives the same patterns as searching them all.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, NamedTuple, Sequence

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax

from anatomy_jax.classwise.stamping import logits_from_unit, mask_from_logits, pattern_from_logits, stamp_soft

ApplyFn = Callable[..., jax.Array]
CANVAS = ("none", "init", "near")


@dataclasses.dataclass(frozen=True)
class SearchSettings:
    """How the pattern search runs (defaults suit 8x8 to 32x32 inputs; see the module docstring)."""

    steps: int = 400
    batch_size: int = 64
    learning_rate: float = 0.1
    target_asr: float = 0.95
    init_lambda: float = 0.0
    lambda_start: float = 1.0
    lambda_up: float = 1.5
    lambda_down: float = 1.5 ** 1.5
    check_every: int = 10
    patience: int = 3
    tv_weight: float = 0.0
    canvas: str = "none"
    canvas_weight: float = 1.0
    mask_init: float = 0.1  # initial mask value everywhere (a small, uniform start)

    def validate(self) -> None:
        """ValueError naming the first bad value."""
        for name in ("steps", "batch_size", "check_every", "patience"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 < self.target_asr <= 1.0:
            raise ValueError(f"target_asr must be in (0, 1], got {self.target_asr}")
        for name in ("learning_rate", "lambda_start"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        for name in ("init_lambda", "tv_weight", "canvas_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not (self.lambda_up > 1 and self.lambda_down > 1):
            raise ValueError(f"lambda_up and lambda_down must be > 1, got {self.lambda_up}, {self.lambda_down}")
        if self.canvas not in CANVAS:
            raise ValueError(f"unknown canvas {self.canvas!r}; choose one of {', '.join(CANVAS)}")
        if not 0.0 < self.mask_init < 1.0:
            raise ValueError(f"mask_init must be in (0, 1), got {self.mask_init}")


class ClassPatterns(NamedTuple):
    """The search's result for K classes (leading axis = class, in `classes` order)."""

    classes: np.ndarray  # (K,) int
    masks: np.ndarray  # (K, H, W) in [0, 1]
    patterns: np.ndarray  # (K, H, W, C) in [0, 1]
    train_asr: np.ndarray  # (K,) batch-averaged success rate at the kept check (the last check if none reached)
    lambdas: np.ndarray  # (K,) lambda at the end of the search
    reached: np.ndarray  # (K,) bool: the target ASR was reached at some check


class _Params(NamedTuple):
    mask_logits: jax.Array  # (H, W)
    pattern_logits: jax.Array  # (H, W, C)


class _State(NamedTuple):
    params: _Params
    opt_state: Any
    lam: jax.Array
    up: jax.Array  # checks in a row at or above the target
    down: jax.Array  # checks in a row below it
    asr_sum: jax.Array  # success rate summed over the current check window
    best_area: jax.Array
    best: _Params
    best_asr: jax.Array
    last_asr: jax.Array  # window-averaged success rate at the latest check
    reached: jax.Array


def _total_variation(m: jax.Array) -> jax.Array:
    """The TV penalty: mean |difference| of neighbours (so `tv_weight` does not scale with image
    size; `metrics.mask_total_variation` reports the sum)."""
    return jnp.abs(jnp.diff(m, axis=0)).mean() + jnp.abs(jnp.diff(m, axis=1)).mean()


def _search_one(apply_fn: ApplyFn, settings: SearchSettings, variables: Any, images: jax.Array,
                others: jax.Array, count: jax.Array, canvas: jax.Array, k: jax.Array, key: jax.Array):
    """The search for class k (unbatched: vmapped over classes by the caller)."""
    h, w, _ = images.shape[1:]
    tx = optax.adam(settings.learning_rate, b1=0.5, b2=0.9)  # Neural Cleanse's Adam
    if settings.canvas == "none":
        pattern_logits = jax.random.normal(jax.random.fold_in(key, 1), images.shape[1:]) * 0.1
    else:
        pattern_logits = logits_from_unit(canvas)
    params = _Params(jnp.full((h, w), logits_from_unit(jnp.float32(settings.mask_init))), pattern_logits)
    zero = jnp.zeros((), jnp.int32)
    state = _State(params, tx.init(params), jnp.float32(settings.init_lambda), zero, zero, jnp.float32(0),
                   jnp.float32(jnp.inf), params, jnp.float32(0), jnp.float32(0), jnp.bool_(False))

    def loss_fn(p: _Params, x: jax.Array, lam: jax.Array):
        m, pat = mask_from_logits(p.mask_logits), pattern_from_logits(p.pattern_logits)
        logits = apply_fn(variables, stamp_soft(x, m, pat))
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, jnp.full(len(x), k)).mean()
        loss = ce + lam * m.mean() + settings.tv_weight * _total_variation(m)
        if settings.canvas == "near":
            loss = loss + settings.canvas_weight * jnp.mean((pat - canvas) ** 2)
        return loss, (logits.argmax(-1) == k).mean()

    def step(state: _State, t: jax.Array) -> tuple[_State, None]:
        pick = jax.random.randint(jax.random.fold_in(key, t + 2), (settings.batch_size,), 0, count)
        x = images[others[pick]]
        (_, asr), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params, x, state.lam)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        state = state._replace(params=params, opt_state=opt_state, asr_sum=state.asr_sum + asr)
        check = (t + 1) % settings.check_every == 0
        return jax.lax.cond(check, _check, lambda s: s, state), None

    def _check(state: _State) -> _State:
        asr = state.asr_sum / settings.check_every
        hit = asr >= settings.target_asr
        up = jnp.where(hit, state.up + 1, 0)
        down = jnp.where(hit, 0, state.down + 1)
        unset = state.lam == 0
        lam = jnp.where(unset & (up >= settings.patience), settings.lambda_start, state.lam)
        raise_ = ~unset & (up >= settings.patience)
        lower = ~unset & (down >= settings.patience)
        lam = jnp.where(raise_, lam * settings.lambda_up, jnp.where(lower, lam / settings.lambda_down, lam))
        up = jnp.where(raise_ | (unset & (up >= settings.patience)), 0, up)
        down = jnp.where(lower, 0, down)
        area = mask_from_logits(state.params.mask_logits).mean()
        better = hit & (area < state.best_area)
        best = jax.tree.map(lambda new, old: jnp.where(better, new, old), state.params, state.best)
        return state._replace(lam=lam, up=up, down=down, asr_sum=jnp.float32(0),
                              best_area=jnp.where(better, area, state.best_area), best=best,
                              best_asr=jnp.where(better, asr, state.best_asr), last_asr=asr,
                              reached=state.reached | hit)

    state, _ = jax.lax.scan(step, state, jnp.arange(settings.steps))
    kept = jax.tree.map(lambda b, last: jnp.where(state.reached, b, last), state.best, state.params)
    return (mask_from_logits(kept.mask_logits), pattern_from_logits(kept.pattern_logits),
            jnp.where(state.reached, state.best_asr, state.last_asr), state.lam, state.reached)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _search_chunk(apply_fn, settings, variables, images, others, counts, canvases, classes, keys):
    return jax.vmap(functools.partial(_search_one, apply_fn, settings, variables, images),
                    in_axes=(0, 0, 0, 0, 0))(others, counts, canvases, classes, keys)


def _others(labels: np.ndarray, classes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per class: the indices of the images of other classes (padded) and how many there are."""
    rows = [np.flatnonzero(labels != k) for k in classes]
    counts = np.array([len(r) for r in rows], np.int32)
    if counts.min() == 0:
        raise ValueError(f"class {int(classes[counts.argmin()])} has no images of other classes to search on")
    width = counts.max()
    return np.stack([np.pad(r, (0, width - len(r)), mode="edge") for r in rows]), counts


def _canvases(images: np.ndarray, labels: np.ndarray, classes: np.ndarray, key: jax.Array) -> np.ndarray:
    """One image of each class, drawn with `fold_in(key, k)` (zeros for a class with no image)."""
    out = np.zeros((len(classes), *images.shape[1:]), np.float32)
    for i, k in enumerate(classes):
        own = np.flatnonzero(labels == k)
        if len(own):
            out[i] = images[own[int(jax.random.randint(jax.random.fold_in(key, int(k)), (), 0, len(own)))]]
    return out


def search_class_patterns(apply_fn: ApplyFn, variables: Any, images: np.ndarray | jax.Array,
                          labels: np.ndarray | jax.Array, num_classes: int, key: jax.Array, *,
                          settings: SearchSettings = SearchSettings(), classes: Sequence[int] | None = None,
                          class_chunk: int | None = None) -> ClassPatterns:
    """One mask and pattern per class (see the module docstring), all classes in one program.

    apply_fn(variables, x) -> logits for float images x (n, H, W, C) in [0, 1] (a registry model's
    `model.apply`: batch norm in eval mode). `images` (n, H, W, C) float in [0, 1] and `labels` (n,)
    are the images the search draws from (class k uses those labelled otherwise). `classes`
    (default: all) are searched in chunks of `class_chunk` (default: all at once); class k's
    randomness is `fold_in(key, k)` whatever the chunking.
    """
    settings.validate()
    images = np.asarray(images, np.float32)
    labels = np.asarray(labels)
    chex.assert_rank([images, labels], [4, 1])
    if len(images) != len(labels):
        raise ValueError(f"images and labels differ in length: {len(images)} and {len(labels)}")
    if images.min() < 0 or images.max() > 1:
        raise ValueError(f"images must be floats in [0, 1], got values in [{images.min()}, {images.max()}]")
    classes = np.arange(num_classes) if classes is None else np.asarray(classes, np.int64)
    if classes.ndim != 1 or len(classes) == 0 or classes.min() < 0 or classes.max() >= num_classes:
        raise ValueError(f"classes must be a non-empty list of classes in [0, {num_classes}), got {classes}")
    chunk = len(classes) if class_chunk is None else class_chunk
    if chunk < 1:
        raise ValueError(f"class_chunk must be >= 1, got {class_chunk}")
    others, counts = _others(labels, classes)
    canvases = _canvases(images, labels, classes, jax.random.fold_in(key, 0xCA1))
    keys = jax.vmap(lambda k: jax.random.fold_in(key, k))(jnp.asarray(classes))
    device_images = jnp.asarray(images)
    parts = []
    for start in range(0, len(classes), chunk):
        idx = np.arange(start, start + chunk).clip(max=len(classes) - 1)  # the last chunk repeats its last class
        real = min(chunk, len(classes) - start)
        out = _search_chunk(apply_fn, settings, variables, device_images, jnp.asarray(others[idx]),
                            jnp.asarray(counts[idx]), jnp.asarray(canvases[idx]), jnp.asarray(classes[idx]),
                            keys[idx])
        parts.append([np.asarray(v)[:real] for v in jax.device_get(out)])
    masks, patterns, asr, lambdas, reached = (np.concatenate(v) for v in zip(*parts))
    return ClassPatterns(classes, masks, patterns, asr, lambdas, reached.astype(bool))
