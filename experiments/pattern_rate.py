#!/usr/bin/env python
"""Pattern acquisition vs frequency, correlation and learning rate (seed 000).

Plants a pattern in a share f of the training images, relabels a share c of those to the target
class, trains over the grid pattern look (--patterns x --patch-sizes x --alphas) x learning rate x
f x c x seed, and writes into --out results.json (per run and pattern: ASR, reliance and the clean
target rate, the ASR's no-pattern baseline, at every evaluation; the sustained acquisition step,
from which the ASR stays at or above the threshold, and the first crossing), curves.png,
acquisition.png and acquisition_vs_<axis>.png for each visibility axis with several values. Runs
offline on scikit-learn's digits by default (54 runs, about 70 s on 2 CPU cores):

    python experiments/pattern_rate.py
    python experiments/pattern_rate.py --patterns checkerboard,solid,random --patch-sizes 1,2,3 --correlations 1
    python experiments/pattern_rate.py --clean-label --frequencies 0.03,0.1
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
