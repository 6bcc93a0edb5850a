#!/usr/bin/env python
"""Competing patterns (seed 000): several patterns planted in one dataset, which is learned first?

Plants each pattern on its own share of the training images, trains over learning rates x
schedules (constant, step) x seeds as one sweep, and writes results.json (per pattern: ASR,
reliance, clean target rate over time and the sustained acquisition step; per run: the
acquisition order and, for step schedules, the decays before each acquisition),
competition_curves.png and acquisition_order.png into --out. Runs offline on digits by default:

    python experiments/pattern_competition.py
    python experiments/pattern_competition.py \
        --pattern-spec "checkerboard:size=2:at=top-left:target=1:f=0.1:c=1:name=frequent" \
        --pattern-spec "checkerboard:size=2:at=bottom-right:target=1:f=0.02:c=1:name=rare" \
        --learning-rates 0.01,0.1 --schedules constant,step --seeds 0,1,2
"""

from __future__ import annotations

import sys

from anatomy_jax.experiment.cli import run_main
from anatomy_jax.experiment.pattern_competition import (PatternCompetitionConfig, format_summary,
                                                        run_pattern_competition)
from anatomy_jax.poison.spec_text import PATTERN_SPEC_SYNTAX

if __name__ == "__main__":
    sys.exit(run_main(PatternCompetitionConfig, f"{__doc__}\n{PATTERN_SPEC_SYNTAX}", run_pattern_competition,
                      format_summary, "pattern_competition"))
