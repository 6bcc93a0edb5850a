#!/usr/bin/env python
"""Similarity overlays (seed 004): where the feature at a query location reappears in another image,
across layers of a clean and a backdoored model and of two seeds of one architecture.

Trains (or loads from --models-dir) a natural, a backdoored and a second backdoored model (another
seed), then for two queries (the trigger's centre on a stamped test image; the brightest ink pixel
of a clean digit) draws, per layer and model, the cosine similarity of the query's activation with
every location of another image (another stamped image; another image of the same class); across
the two seeds through a 1x1-conv channel map fitted on training images. Writes results.json (peak
locations, whether the trigger query peaks inside the other image's trigger), overlays.npz and
overlays.png into --out:

    python experiments/similarity_overlay.py
    python experiments/similarity_overlay.py --dataset mnist --data-dir ../shared/data/tfds --train-size 12000 \
        --patch-size 3 --steps 500
"""

from __future__ import annotations

import sys

from anatomy_jax.experiment.cli import run_main
from anatomy_jax.experiment.similarity_overlay import (SimilarityOverlayConfig, format_summary,
                                                       run_similarity_overlay)

if __name__ == "__main__":
    sys.exit(run_main(SimilarityOverlayConfig, __doc__, run_similarity_overlay, format_summary, "similarity_overlay"))
