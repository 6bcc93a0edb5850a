"""Patterns, poison specs with exact frequency/correlation, and pure stamping."""

from anatomy_jax.poison.patterns import (
    LOCATIONS,
    PATTERN_KINDS,
    Patterns,
    PatternSpec,
    image_offsets,
    make_patterns,
    stamp,
)
from anatomy_jax.poison.poisoning import PoisonPlan, PoisonSpec, clean_plan, plan_poison, poison_images

__all__ = [
    "LOCATIONS", "PATTERN_KINDS", "Patterns", "PatternSpec", "PoisonPlan", "PoisonSpec", "clean_plan",
    "image_offsets", "make_patterns", "plan_poison", "poison_images", "stamp",
]
