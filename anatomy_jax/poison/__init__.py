"""Patterns, poison specs with exact frequency/correlation, pure stamping and backdoor metrics."""

from anatomy_jax.poison.metrics import (BackdoorInputs, BackdoorMetrics, acquisition_step, attack_hits,
                                        attack_success_rate, backdoor_inputs, first_crossing_step, reliance,
                                        reliance_sum, target_hits, target_margin)
from anatomy_jax.poison.patterns import (
    LOCATIONS,
    PATTERN_KINDS,
    Patterns,
    PatternSpec,
    image_offsets,
    make_patterns,
    stamp,
    stamp_everywhere,
)
from anatomy_jax.poison.poisoning import PoisonPlan, PoisonSpec, clean_plan, plan_poison, poison_images

__all__ = [
    "LOCATIONS", "PATTERN_KINDS", "BackdoorInputs", "BackdoorMetrics", "Patterns", "PatternSpec", "PoisonPlan",
    "PoisonSpec", "acquisition_step", "attack_hits", "attack_success_rate", "backdoor_inputs", "clean_plan",
    "first_crossing_step", "image_offsets", "make_patterns", "plan_poison", "poison_images", "reliance", "reliance_sum", "stamp", "stamp_everywhere",
    "target_hits", "target_margin",
]
