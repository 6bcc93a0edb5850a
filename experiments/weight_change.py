#!/usr/bin/env python
"""Relative weight change (RWC) per layer and per layer group over training, and its clusters (seed 003).

Trains each model x seed with constant-learning-rate SGD at the paper's Table 1 setting for the
(model, dataset) pair, records every weight tensor's RWC once per epoch (both definitions),
averages it per layer group (ResNet stem/block1..4/classifier, VGG and AlexNet early/middle/late),
checks the papers' claims against the group means, clusters the layers' trajectories as WeightScale
did (first/last layer dropped, 2-sigma outliers, k-means k = 1..17 on the matrix and on its PCA
reduction, per layer type for EfficientNet) and writes results.json, rwc_per_layer.png,
rwc_by_group.png, scree.png and clusters.png into --out:

    python experiments/weight_change.py
    python experiments/weight_change.py --dataset mnist --data-dir ../shared/data/tfds --models resnet18 \
        --seeds 0,42,123 --epochs 6 --train-size 5120 --test-size 2000 --paper-augmentation
    python experiments/weight_change.py --preset paper --dataset cifar10 --models resnet18,vgg19,alexnet \
        --width 1 --shuffle false
"""

from __future__ import annotations

import sys

from anatomy_jax.experiment.cli import run_main
from anatomy_jax.experiment.weight_change import WeightChangeConfig, format_summary, run_weight_change

if __name__ == "__main__":
    sys.exit(run_main(WeightChangeConfig, __doc__, run_weight_change, format_summary, "weight_change"))
