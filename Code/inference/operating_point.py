"""An operating threshold for the malignancy probability, chosen on val for a target specificity, applied to test.

Rule: an image is called malignant when p > t. On val, with the benign images' probabilities sorted,
b₍₁₎ ≤ … ≤ b₍ₙ₎, and k = ⌈s*·n⌉ for the target specificity s*,

    t = b₍k₎          the smallest threshold whose val specificity #{b ≤ t}/n reaches s*

so val sensitivity is as high as that specificity allows (ties at b₍k₎ only raise the specificity). On test, at the
same t: sensitivity = #{malignant p > t}/#malignant, specificity = #{benign p ≤ t}/#benign. NaN where a part lacks
a class. "Sensitivity at a specificity chosen on val" is the test sensitivity at this t.
"""
from __future__ import annotations

import math
from typing import Dict, Sequence

import numpy as np


def threshold_for_specificity(prob: Sequence[float], label: Sequence[int], target: float) -> float:
    """t = b₍⌈s*·n⌉₎ over the benign (label 0) probabilities (module docstring); NaN without benign images."""
    if not 0.0 < target <= 1.0:
        raise ValueError(f"target specificity must be in (0, 1], got {target}")
    benign = np.sort(np.asarray(prob, dtype=float)[np.asarray(label) == 0])
    if benign.size == 0:
        return math.nan
    k = max(int(math.ceil(target * benign.size - 1e-9)), 1)
    return float(benign[k - 1])


def rates_at(prob: Sequence[float], label: Sequence[int], threshold: float) -> Dict[str, float]:
    """``{"sensitivity", "specificity"}`` of the rule p > ``threshold`` (NaN for a class that is absent)."""
    prob, label = np.asarray(prob, dtype=float), np.asarray(label)
    called = prob > threshold
    pos, neg = label == 1, label == 0
    return {"sensitivity": float(called[pos].mean()) if pos.any() else math.nan,
            "specificity": float((~called[neg]).mean()) if neg.any() else math.nan}
