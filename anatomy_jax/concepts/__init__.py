"""Concepts in filters (Net2Vec), concept data that ships with the library, similarity overlays."""

from anatomy_jax.concepts.data import (COLOURS, INK, PLANTED, SHAPES, TEXTURES, ConceptData, concept_names,
                                       load_broden, make_concept_set, shape_mask, texture_values, write_broden)
from anatomy_jax.concepts.net2vec import (FRACTION, QUANTILE, ClassificationProbes, LayerConcepts, ProbeSettings,
                                          SegmentationProbes, analyse_layer, average_precision, binarise,
                                          classification_scores, concept_weights, embedding_similarity,
                                          filter_counts, filters_needed, probe_iou, quantile_thresholds,
                                          segmentation_alpha, set_iou,
                                          single_filter_iou, top_filter_masks, train_classification_probes,
                                          train_segmentation_probes, upsample)
from anatomy_jax.concepts.overlay import peak_location, pixel_to_cell, similarity_overlay
from anatomy_jax.concepts.tracking import ConceptTracker, layer_activations, spatial_layers, tracking_steps

__all__ = ["COLOURS", "INK", "PLANTED", "SHAPES", "TEXTURES", "ConceptData", "concept_names", "load_broden",
           "make_concept_set", "shape_mask", "texture_values", "write_broden", "FRACTION", "QUANTILE",
           "ClassificationProbes", "LayerConcepts", "ProbeSettings", "SegmentationProbes", "analyse_layer",
           "average_precision", "binarise", "classification_scores", "concept_weights", "embedding_similarity",
           "filter_counts", "filters_needed", "probe_iou", "quantile_thresholds", "segmentation_alpha", "set_iou",
           "single_filter_iou", "top_filter_masks", "train_classification_probes", "train_segmentation_probes", "upsample",
           "peak_location", "pixel_to_cell", "similarity_overlay", "ConceptTracker", "layer_activations",
           "spatial_layers", "tracking_steps"]
