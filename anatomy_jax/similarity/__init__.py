"""Comparing representations: extraction, CKA, CCA/SVCCA/PWCCA, Procrustes, linear maps, stitching.

Every function takes x (n x p) and y (n x q) with a shared example axis (conv maps flattened or
pooled by the caller) and returns arrays.
"""

from anatomy_jax.similarity.cca import cca, pwcca, reduce_dimension, svcca
from anatomy_jax.similarity.cka import center, gram_path, hsic_unbiased, linear_cka, minibatch_linear_cka, rbf_cka
from anatomy_jax.similarity.representations import POOLING, representation_shape, representations
from anatomy_jax.similarity.stitching import stitched_accuracy, stitched_predictions
from anatomy_jax.similarity.linear import (RidgeBasis, fit_linear_map, fit_ridge_cv, orthogonal_procrustes,
                                           procrustes_distance, r2_score, ridge_basis, row_factor)
from anatomy_jax.similarity.conv_map import apply_conv_map, fit_conv_map, resize_spatial
from anatomy_jax.similarity.stitching import stitched_loss, train_stitch
from anatomy_jax.similarity.input_gradients import input_gradients, saliency_cosine, saliency_cosine_matrix

__all__ = ["POOLING", "representation_shape", "representations", "stitched_accuracy", "stitched_predictions",
           "cca", "fit_linear_map", "fit_ridge_cv", "hsic_unbiased", "linear_cka", "minibatch_linear_cka",
           "orthogonal_procrustes", "procrustes_distance", "pwcca", "r2_score", "rbf_cka", "RidgeBasis", "ridge_basis",
           "svcca",
           "center", "gram_path", "reduce_dimension", "row_factor",
           "apply_conv_map", "fit_conv_map", "resize_spatial", "stitched_loss", "train_stitch",
           "input_gradients", "saliency_cosine", "saliency_cosine_matrix"]
