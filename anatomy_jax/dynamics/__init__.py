"""Training dynamics: relative weight change per layer and its aggregation by PCA + k-means."""

from anatomy_jax.dynamics.clustering import clean_matrix, cluster_layers, elbow
from anatomy_jax.dynamics.rwc import MODES, RWCTracker, depth_order, layer_weights, relative_weight_change

__all__ = ["MODES", "RWCTracker", "clean_matrix", "cluster_layers", "depth_order", "elbow", "layer_weights",
           "relative_weight_change"]
