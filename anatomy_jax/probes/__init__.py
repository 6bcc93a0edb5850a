"""Probes: per-example gradients, gradient alignment of example groups, saliency mass."""

from anatomy_jax.probes.gradients import (AlignmentSums, alignment_statistics, alignment_sums, flatten_per_example,
                                          gradient_alignment, layer_order, merge_params, model_loss_fn,
                                          per_example_grads, saliency_mass, select_params)
from anatomy_jax.probes.tracker import (GROUP_NAMES, GradientProbe, ProbeBatch, SweepGradientProbe, example_groups,
                                        group_names, num_groups, probe_batch, probe_statistics, stratified_sizes)

__all__ = ["AlignmentSums", "GROUP_NAMES", "GradientProbe", "ProbeBatch", "SweepGradientProbe", "alignment_statistics",
           "alignment_sums", "example_groups", "flatten_per_example", "gradient_alignment", "group_names",
           "layer_order", "merge_params", "model_loss_fn", "num_groups", "per_example_grads", "probe_batch",
           "probe_statistics", "saliency_mass", "select_params", "stratified_sizes"]
