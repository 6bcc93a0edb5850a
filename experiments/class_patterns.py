#!/usr/bin/env python
"""Class-wise patterns in input space for a natural, a backdoored and an adversarially trained model (seed 002).

Trains the three models of one architecture on the same data (or loads them from --models-dir),
then searches, for every class at once, the smallest mask m and pattern p such that stamping
(1 - m) x + m p onto images of the other classes makes the model predict that class (Neural
Cleanse's objective and lambda schedule). Per model and class: held-out ASR, mask area, the MAD
anomaly index, centroid, total variation and the mask's mass near the planted trigger; the
backdoor counts as recovered when the target's mask is the smallest, its anomaly index >= 2 and
its ASR >= 0.9. Writes results.json, patterns.npz, patterns.png and mask_areas.png into --out:

    python experiments/class_patterns.py
    python experiments/class_patterns.py --dataset mnist --model cnn --patch-size 3 --steps 1500
"""

from __future__ import annotations

import sys

from anatomy_jax.experiment.class_patterns import ClassPatternsConfig, format_summary, run_class_patterns
from anatomy_jax.experiment.cli import run_main

if __name__ == "__main__":
    sys.exit(run_main(ClassPatternsConfig, __doc__, run_class_patterns, format_summary, "class_patterns"))
