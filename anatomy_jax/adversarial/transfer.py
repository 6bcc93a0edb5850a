"""Adversarial transferability between models."""

from __future__ import annotations

import numpy as np


def transfer_matrix(clean_correct: np.ndarray, adv_correct: np.ndarray) -> dict[str, np.ndarray]:
    """Transfer rates between M models from who classifies what correctly.

    clean_correct: (M, n) bool, model j correct on clean test image k.
    adv_correct: (M, M, n) bool, model j correct on model i's adversarial example of image k.

    Returns `transfer` T[i, j]: among images that models i and j both classify correctly and
    whose adversarial example from model i fools model i, the share that also fools model j (NaN
    where no image qualifies; the diagonal is 1 by construction); `error` E[i, j]: model j's error
    rate on model i's adversarial examples (all images); `counts`: how many images T[i, j] rests on.
    """
    clean_correct = np.asarray(clean_correct, bool)
    adv_correct = np.asarray(adv_correct, bool)
    m, n = clean_correct.shape
    if adv_correct.shape != (m, m, n):
        raise ValueError(f"adv_correct must be ({m}, {m}, {n}), got {adv_correct.shape}")
    fooled_source = ~adv_correct[np.arange(m), np.arange(m)]  # (M, n): i's attack fools i
    both = clean_correct[:, None, :] & clean_correct[None, :, :]  # (M, M, n)
    eligible = both & fooled_source[:, None, :]
    counts = eligible.sum(axis=2)
    transferred = (eligible & ~adv_correct).sum(axis=2)
    with np.errstate(invalid="ignore", divide="ignore"):
        transfer = np.where(counts > 0, transferred / np.maximum(counts, 1), np.nan)
    return {"transfer": transfer, "error": (~adv_correct).mean(axis=2), "counts": counts}
