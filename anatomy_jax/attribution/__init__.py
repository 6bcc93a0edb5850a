"""Attribution by perturbation (seed 004): extremal and meaningful perturbations, saliency
baselines, and the metrics that score maps (pointing game, deletion / insertion, box mass)."""

from anatomy_jax.attribution.extremal import (JITTERS, REWARDS, TIE_BREAKS, VARIANTS, ExtremalPerturbation,
                                              class_score, default_regul_growth, extremal_perturbation, regul_weights)
from anatomy_jax.attribution.meaningful import (GAMES, REFERENCES, MeaningfulPerturbation, meaningful_defaults,
                                                meaningful_perturbation, perturbation_reference)
from anatomy_jax.attribution.metrics import (argmax_points, curve_auc, deletion_curve, insertion_curve, mass_in_box,
                                             pointing_game, rank_correlation, scaled_tolerance)
from anatomy_jax.attribution.perturbation import (PERTURBATIONS, SmoothMaskGenerator, apply_pyramid, area_rank_loss,
                                                  area_reference, blur_matrix, blur_pyramid, gaussian_blur,
                                                  gaussian_kernel, pyramid_sigmas, scaled_defaults, shift_edge,
                                                  smooth_mask_generator, tv_norm)
from anatomy_jax.attribution.saliency import (REDUCTIONS, grad_cam, gradient, gradient_x_input, integrated_gradients,
                                              reduce_channels, rise, rise_masks, smoothgrad, spatial_layers)

__all__ = ["JITTERS", "REWARDS", "TIE_BREAKS", "VARIANTS", "ExtremalPerturbation", "class_score",
           "default_regul_growth", "extremal_perturbation", "regul_weights", "GAMES", "REFERENCES",
           "MeaningfulPerturbation", "meaningful_defaults", "meaningful_perturbation", "perturbation_reference",
           "argmax_points", "curve_auc", "deletion_curve", "insertion_curve", "mass_in_box", "pointing_game",
           "rank_correlation", "scaled_tolerance", "PERTURBATIONS", "SmoothMaskGenerator", "apply_pyramid",
           "area_rank_loss", "area_reference", "blur_matrix", "blur_pyramid", "gaussian_blur", "gaussian_kernel",
           "pyramid_sigmas", "scaled_defaults", "shift_edge", "smooth_mask_generator", "tv_norm", "REDUCTIONS",
           "grad_cam", "gradient", "gradient_x_input", "integrated_gradients", "reduce_channels", "rise", "rise_masks",
           "smoothgrad", "spatial_layers"]
