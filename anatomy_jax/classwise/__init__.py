"""Class-wise patterns in input space (seed 002): per class, the small mask and pattern that make a
model predict that class when stamped onto other classes' images; Neural Cleanse's anomaly index."""

from anatomy_jax.classwise.metrics import (anomaly_index, box_mass, check_box, flagged_classes, grow_box,
                                           mask_area, mask_boundary_ratio, mask_centroid, mask_total_variation,
                                           mass_near_box, pattern_success_rate)
from anatomy_jax.classwise.search import CANVAS, ClassPatterns, SearchSettings, search_class_patterns
from anatomy_jax.classwise.stamping import logits_from_unit, mask_from_logits, pattern_from_logits, stamp_soft

__all__ = ["anomaly_index", "box_mass", "check_box", "flagged_classes", "grow_box", "mask_area",
           "mask_boundary_ratio", "mask_centroid", "mask_total_variation", "mass_near_box", "pattern_success_rate",
           "CANVAS", "ClassPatterns", "SearchSettings", "search_class_patterns", "logits_from_unit",
           "mask_from_logits", "pattern_from_logits", "stamp_soft"]
