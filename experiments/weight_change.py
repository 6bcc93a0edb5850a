#!/usr/bin/env python
"""Relative weight change (RWC) per layer over training, and its clusters (seed 003).

Trains each model for --epochs with constant-learning-rate SGD, records every weight tensor's RWC
once per epoch (averaged over --seeds), clusters the layers' trajectories (k-means with the elbow
chosen automatically, PCA for the picture) and writes results.json, rwc_per_layer.png,
rwc_by_depth.png, scree.png and clusters.png into --out:

    python experiments/weight_change.py
    python experiments/weight_change.py --dataset cifar10 --models resnet18,vgg19,alexnet --width 1 \
        --epochs 150 --seeds 0,42,123,1000,1234
"""

from __future__ import annotations

import sys

from anatomy_jax.experiment.cli import run_main
from anatomy_jax.experiment.weight_change import WeightChangeConfig, format_summary, run_weight_change

if __name__ == "__main__":
    sys.exit(run_main(WeightChangeConfig, __doc__, run_weight_change, format_summary, "weight_change"))
