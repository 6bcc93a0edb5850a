"""Probes: per-example gradients, gradient alignment of example groups, saliency mass."""

from anatomy_jax.probes.gradients import (flatten_per_example, gradient_alignment, merge_params, model_loss_fn,
                                          per_example_grads, saliency_mass, select_params)
from anatomy_jax.probes.tracker import GROUP_NAMES, GradientProbe

__all__ = ["GROUP_NAMES", "GradientProbe", "flatten_per_example", "gradient_alignment", "merge_params",
           "model_loss_fn", "per_example_grads", "saliency_mass", "select_params"]
