#!/usr/bin/env python
"""Net2Vec on a small CNN with a planted pattern (seed 004, linked to seed 000).

Trains a model on data where a patch trigger is planted (or resumes it from --out), builds the
library's synthetic concept set on the same images (shapes, colours, textures, ink and the
trigger as the concept `planted`, with exact masks) and reports, per concept and layer, the best
single filter's and the learned combination's set IoU, the filters needed for 90 % of the
combination's IoU, the classification probe's AP, the concept-embedding cosines, and, over
training time, when the planted concept appears in the filters relative to the trigger's
acquisition step. Writes results.json, concept_iou.png, concept_embeddings.png and
concept_over_time.png into --out:

    python experiments/net2vec.py
    python experiments/net2vec.py --dataset mnist --data-dir ../shared/data/tfds --train-size 12000 \\
        --test-size 2000 --patch-size 3 --steps 500 --concept-images 2000
"""

from __future__ import annotations

import sys

from anatomy_jax.experiment.cli import run_main
from anatomy_jax.experiment.net2vec import Net2VecConfig, format_summary, run_net2vec

if __name__ == "__main__":
    sys.exit(run_main(Net2VecConfig, __doc__, run_net2vec, format_summary, "net2vec"))
