"""Training dynamics: relative weight change per layer and its aggregation by PCA + k-means."""

from anatomy_jax.dynamics.clustering import MAX_K, SEED, clean_matrix, cluster_by_type, cluster_layers, elbow
from anatomy_jax.dynamics.groups import (after_first, group_rwc, group_rwc_per_seed, group_rwc_std,
                                         rwc_claims)
from anatomy_jax.dynamics.rwc import (MODES, RWCTracker, depth_order, layer_weights, relative_weight_change,
                                      weight_names)

__all__ = ["MAX_K", "MODES", "RWCTracker", "SEED", "after_first", "clean_matrix", "cluster_by_type",
           "cluster_layers", "depth_order", "elbow", "group_rwc", "group_rwc_per_seed", "group_rwc_std",
           "layer_weights", "relative_weight_change", "rwc_claims", "weight_names"]
