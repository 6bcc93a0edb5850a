#!/usr/bin/env python
"""Gradient alignment vs pattern acquisition (seed 000's gradient hypothesis).

Trains the frequency x correlation x learning-rate grid while probing per-example gradients of a
fixed batch (clean vs patterned images), then tests whether early gradient statistics predict the
acquisition step (Spearman across runs). Writes results.json, alignment_over_time.png and
alignment_vs_acquisition.png into --out and prints the verdict with its numbers:

    python experiments/gradient_alignment.py
    python experiments/gradient_alignment.py --frequencies 0.02,0.05,0.1 --correlations 0.25,0.5,1 --seeds 0,1
"""

from __future__ import annotations

import sys

from anatomy_jax.experiment.cli import run_main
from anatomy_jax.experiment.gradient_alignment import GradientAlignmentConfig, format_summary, run_gradient_alignment

if __name__ == "__main__":
    sys.exit(run_main(GradientAlignmentConfig, __doc__, run_gradient_alignment, format_summary, "gradient_alignment"))
