#!/usr/bin/env python
"""Pattern acquisition vs frequency, correlation and learning rate (seed 000).

Plants a pattern in a share f of the training images, relabels a share c of those to the target
class, trains over the grid f x c x learning rate x seed, and writes results.json, curves.png and
acquisition.png into --out. Runs offline on scikit-learn's digits by default:

    python experiments/pattern_rate.py
    python experiments/pattern_rate.py --dataset mnist --data-dir ../shared/data/tfds --steps 600
    python experiments/pattern_rate.py --dataset cifar10 --model preact_resnet18 --steps 20000 \
        --learning-rates 0.001,0.01,0.1 --frequencies 0.001,0.005,0.01,0.05,0.1 --seeds 0,1,2
"""

from __future__ import annotations

import sys

from anatomy_jax.experiment.cli import run_main
from anatomy_jax.experiment.pattern_rate import PatternRateConfig, format_summary, train_and_evaluate

if __name__ == "__main__":
    sys.exit(run_main(PatternRateConfig, __doc__, train_and_evaluate, format_summary, "pattern_rate"))
