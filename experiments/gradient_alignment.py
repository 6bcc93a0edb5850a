#!/usr/bin/env python
"""Gradient alignment vs pattern acquisition (seed 000's gradient hypothesis).

Trains the frequency x correlation x learning-rate x seed grid while a probe vmapped over the runs
records per-example gradient statistics of a batch weighted back to the training set's real
composition (so a group's share is the share SGD sees), then tests whether early statistics predict
the sustained acquisition step: Spearman across runs with a bootstrap interval and a permutation
p-value, and the partial Spearman given the design (log f, c, log lr): does the gradient explain
acquisition beyond frequency and correlation? Writes results.json, alignment_over_time.png and
alignment_vs_acquisition.png into --out and prints the verdict with its numbers (36 runs, about
100 s on 2 CPU cores):

    python experiments/gradient_alignment.py
    python experiments/gradient_alignment.py --frequencies 0.02,0.05,0.1 --correlations 0.25,0.5,1 --seeds 0,1
"""

from __future__ import annotations

import sys

from anatomy_jax.experiment.cli import run_main
from anatomy_jax.experiment.gradient_alignment import GradientAlignmentConfig, format_summary, run_gradient_alignment

if __name__ == "__main__":
    sys.exit(run_main(GradientAlignmentConfig, __doc__, run_gradient_alignment, format_summary, "gradient_alignment"))
