"""Comparing representations: extraction, CKA, CCA/SVCCA/PWCCA, Procrustes, linear maps, stitching.

Every function takes x (n x p) and y (n x q) with a shared example axis (conv maps flattened or
pooled by the caller) and returns arrays.
"""

from anatomy_jax.similarity.cca import cca, pwcca, svcca
from anatomy_jax.similarity.cka import hsic_unbiased, linear_cka, minibatch_linear_cka, rbf_cka
from anatomy_jax.similarity.representations import POOLING, representation_shape, representations
from anatomy_jax.similarity.stitching import stitched_accuracy, stitched_predictions
from anatomy_jax.similarity.linear import (RidgeBasis, fit_linear_map, fit_ridge_cv, orthogonal_procrustes,
                                           procrustes_distance, r2_score, ridge_basis)

__all__ = ["POOLING", "representation_shape", "representations", "stitched_accuracy", "stitched_predictions",
           "cca", "fit_linear_map", "fit_ridge_cv", "hsic_unbiased", "linear_cka", "minibatch_linear_cka",
           "orthogonal_procrustes", "procrustes_distance", "pwcca", "r2_score", "rbf_cka", "RidgeBasis", "ridge_basis",
           "svcca"]
