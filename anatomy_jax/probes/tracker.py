"""An observer that records gradient-alignment and saliency probes during training.

At every evaluation step it takes a fixed probe batch of training images (stamped and labelled
exactly as training sees them, without augmentation), computes per-example gradients with the
model's running statistics, and records the group statistics of `gradient_alignment` for the
groups 0 = clean, 1 = carries the pattern and is labelled with the target, 2 = carries the
pattern and keeps its own label; the optimizer's update for the probe batch's mean gradient
(from the current optimizer state, so momentum is included); and the saliency mass inside the
pattern on stamped non-target test images. It reads the state and never changes training.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from anatomy_jax.poison.patterns import stamp
from anatomy_jax.probes.gradients import gradient_alignment, model_loss_fn, per_example_grads, saliency_mass
from anatomy_jax.train.runs import RunData
from anatomy_jax.train.evaluation import to_float
from anatomy_jax.train.steps import Trainer, TrainState

GROUP_NAMES = ("clean", "pattern_target", "pattern_other")


@functools.partial(jax.jit, static_argnums=(0, 1))
def _probe(trainer: Trainer, chunk_size: int | None, params, batch_stats, opt_state, x, y, groups,
           test_x, test_y, test_mask) -> dict[str, jax.Array]:
    loss_fn = model_loss_fn(trainer.model.apply, batch_stats)
    grads = per_example_grads(loss_fn, params, x, y, chunk_size=chunk_size)
    mean_grad = jax.tree.map(lambda g: g.mean(0), grads)
    update, _ = trainer.tx.update(mean_grad, opt_state, params)
    stats = gradient_alignment(grads, groups, len(GROUP_NAMES), update=update)
    stats["saliency_mass"] = saliency_mass(loss_fn, params, test_x, test_y, test_mask)["mean"]
    return stats


class GradientProbe:
    """Observer for `train_loop`: `records()` holds one dict of probe values per evaluation step."""

    def __init__(self, trainer: Trainer, data: RunData, key: jax.Array, *, probe_size: int = 256,
                 saliency_size: int = 128, chunk_size: int | None = 32, target: int | None = None):
        plan = data.plan
        carries = np.asarray(plan.pattern_id) == 0
        backdoor = data.backdoor
        if backdoor is None:
            raise ValueError("the gradient probe needs a poisoned run (its data has no pattern)")
        target = int(backdoor.targets[0]) if target is None else target
        rng = np.random.default_rng(np.asarray(jax.random.key_data(key)).sum().item())
        # Half the probe batch carries the pattern (all of them if fewer), the rest is clean.
        with_pattern = np.flatnonzero(carries)
        chosen = rng.permutation(with_pattern)[: probe_size // 2]
        clean = rng.permutation(np.flatnonzero(~carries))[: probe_size - len(chosen)]
        idx = jnp.asarray(np.sort(np.concatenate([chosen, clean])))
        self.x = stamp(to_float(data.images[idx]), plan.pattern_id[idx], plan.offsets[idx], data.patterns)
        self.y = plan.labels[idx]
        relabelled = np.asarray(self.y) == target
        pid = np.asarray(plan.pattern_id)[np.asarray(idx)]
        self.groups = jnp.asarray(np.where(pid < 0, 0, np.where(relabelled, 1, 2)), jnp.int32)
        # Saliency on stamped non-target test images, mask = where the pattern sits.
        ev = data.test
        test_images = ev.images.reshape(-1, *ev.images.shape[2:])
        test_labels = ev.labels.reshape(-1)
        offsets = backdoor.offsets[0].reshape(-1, 2)
        keep = np.flatnonzero((np.asarray(test_labels) != target) & np.asarray(ev.valid.reshape(-1)))[:saliency_size]
        self.test_x = stamp(to_float(test_images[keep]), jnp.zeros(len(keep), jnp.int32), offsets[keep], data.patterns)
        self.test_y = test_labels[keep]
        self.test_mask = jax.vmap(lambda o: jnp.roll(data.patterns.mask[0], (o[0], o[1]), axis=(0, 1)))(offsets[keep])
        self.trainer = trainer
        self.chunk_size = chunk_size
        self.history: list[dict[str, Any]] = []

    def __call__(self, step: int, state: TrainState, metrics: dict) -> None:
        stats = _probe(self.trainer, self.chunk_size, state.params, state.batch_stats, state.opt_state, self.x,
                       self.y, self.groups, self.test_x, self.test_y, self.test_mask)
        stats = jax.device_get(stats)
        record: dict[str, Any] = {"step": int(step), "saliency_mass": float(stats.pop("saliency_mass"))}
        for name, value in stats.items():
            record[name] = np.nan_to_num(np.asarray(value, dtype=float)).tolist()
        self.history.append(record)

    def records(self) -> list[dict[str, Any]]:
        """The probe values of every evaluation step so far (JSON)."""
        return list(self.history)
