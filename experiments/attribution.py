#!/usr/bin/env python
"""Attribution of a backdoored model's decisions: extremal and meaningful perturbations, saliency baselines,
pointing game (seed 004).

Trains the natural and the backdoored model of the class-patterns study (or loads them from
--models-dir), then explains the target class on stamped non-target test images that the
backdoored model calls the target, and the true class on clean test images, with extremal
perturbations (preserve game, blur pyramid, areas --areas, saliency = sum of the masks), meaningful
perturbations (deletion game), gradient, gradient x input, integrated gradients, SmoothGrad,
Grad-CAM and RISE. Per method: the pointing game (a hit when the map's maximum is in the trigger
box), the map's mass in the box, deletion / insertion AUCs on stamped and on clean images; the
extremal masks' area error. Writes results.json, maps.npz, masks.png, area_curves.png and
deletion_insertion.png into --out:

    python experiments/attribution.py
    python experiments/attribution.py --dataset mnist --data-dir ../shared/data/tfds --train-size 12000 \
        --patch-size 3 --steps 500 --areas 0.0115,0.05,0.1 --images 32
"""

from __future__ import annotations

import sys

from anatomy_jax.experiment.attribution import AttributionConfig, format_summary, run_attribution
from anatomy_jax.experiment.cli import run_main

if __name__ == "__main__":
    sys.exit(run_main(AttributionConfig, __doc__, run_attribution, format_summary, "attribution"))
