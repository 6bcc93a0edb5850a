#!/usr/bin/env python
"""Comparing learned representations of a model zoo, and adversarial transfer between its nets (seed 001).

Trains --models x --seeds (or loads them from --zoo), then for every ordered pair of nets and every
relative depth in --depths (1 = penultimate layer): linear CKA, PWCCA, Procrustes distance, R^2 of a
ridge map between the representations and the stitched accuracy (net A up to the layer, the map,
net B from there on); PGD examples crafted on each net and classified by every other (transfer
matrix); the Spearman correlation between similarity and transfer across pairs; same-architecture
vs different-architecture means. Writes results.json and one PNG per heatmap/scatter into --out:

    python experiments/compare_representations.py
    python experiments/compare_representations.py --dataset cifar10 --width 1 --epochs 100 \
        --models vgg16,resnet18,resnext29 --attack-eps 0.031 --attack-steps 20
"""

from __future__ import annotations

import sys

from anatomy_jax.experiment.cli import run_main
from anatomy_jax.experiment.compare_representations import CompareConfig, format_summary, run_compare

if __name__ == "__main__":
    sys.exit(run_main(CompareConfig, __doc__, run_compare, format_summary, "compare_representations"))
