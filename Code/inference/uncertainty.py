"""Predictive uncertainty: entropy maps, per-image uncertainty, the ``review`` flag and risk–coverage curves.

All entropies are **normalised** to [0, 1] by the entropy of the uniform distribution over the K classes:

    H(p) = − Σ_k p_k · log p_k / log K          (0 · log 0 = 0)

- pixel entropy map: H of the per-pixel softmax over {background, lesion} (B×2×H×W → B×H×W);
- ``class_entropy``: H of the image's class probabilities (B×K → B);
- ``lesion_entropy``: the mean pixel entropy over the predicted lesion (lesion probability > 0.5); NaN when no
  pixel is predicted as lesion (no lesion to be unsure about: only ``class_entropy`` can flag such an image).

**Review flag.** An image is flagged for review when ``class_entropy > t_class`` or ``lesion_entropy > t_lesion``.
The thresholds are chosen on the validation images (:func:`fit_review_thresholds`): each is the ``quantile``
(default 0.9) of its quantity over the validation images, i.e. about the 10 % least certain validation images
exceed each threshold; a quantity that is NaN on every validation image gets threshold 1 (never exceeded).

**Risk–coverage** (:func:`risk_coverage`): images sorted from most to least certain; at coverage k/n the k most
certain are kept and the score (accuracy, or Dice) is averaged over them — how the score rises as the least
certain images are set aside. NaN uncertainties count as the most uncertain.
"""
from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch

DEFAULT_QUANTILE = 0.9
REVIEW_KEYS = ("class_entropy", "lesion_entropy")


def normalized_entropy(probs: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """−Σ p log p / log K along ``dim`` (K = its size), in [0, 1]."""
    probs = probs.float().clamp(0.0, 1.0)
    return -torch.special.xlogy(probs, probs).sum(dim=dim) / math.log(probs.shape[dim])


def lesion_mean(values: torch.Tensor, lesion: torch.Tensor) -> torch.Tensor:
    """Mean of B×H×W ``values`` over each image's B×H×W boolean ``lesion`` pixels (NaN where there are none)."""
    lesion = lesion.bool()
    count = lesion.sum(dim=(1, 2))
    total = (values * lesion).sum(dim=(1, 2))
    return torch.where(count > 0, total / count.clamp_min(1), torch.full_like(total, math.nan))


def image_uncertainty(seg_probs: torch.Tensor, cls_probs: torch.Tensor,
                      lesion: Optional[torch.Tensor] = None) -> Dict[str, torch.Tensor]:
    """Uncertainty of a batch: ``entropy`` B×H×W (pixel entropy of ``seg_probs`` B×2×H×W), ``class_entropy`` B
    (of ``cls_probs`` B×K) and ``lesion_entropy`` B (mean entropy over ``lesion``, by default lesion p > 0.5)."""
    entropy = normalized_entropy(seg_probs, dim=1)
    if lesion is None:
        lesion = seg_probs[:, 1] > 0.5
    return {"entropy": entropy, "class_entropy": normalized_entropy(cls_probs, dim=1),
            "lesion_entropy": lesion_mean(entropy, lesion)}


def fit_review_thresholds(class_entropy: Sequence[float], lesion_entropy: Sequence[float],
                          quantile: float = DEFAULT_QUANTILE) -> Dict[str, float]:
    """``{"class_entropy": t_class, "lesion_entropy": t_lesion}``: the ``quantile`` of each over the validation
    images (NaN values ignored; 1.0 when all are NaN)."""
    if not 0.0 < quantile < 1.0:
        raise ValueError(f"quantile must be in (0, 1), got {quantile}")
    out = {}
    for key, values in zip(REVIEW_KEYS, (class_entropy, lesion_entropy)):
        values = np.asarray(values, dtype=np.float64)
        finite = values[np.isfinite(values)]
        out[key] = float(np.quantile(finite, quantile)) if finite.size else 1.0
    return out


def review_flags(class_entropy: Sequence[float], lesion_entropy: Sequence[float],
                 thresholds: Dict[str, float]) -> np.ndarray:
    """Boolean per image: class_entropy > t_class or lesion_entropy > t_lesion (a NaN never exceeds)."""
    class_entropy = np.asarray(class_entropy, dtype=np.float64)
    lesion_entropy = np.asarray(lesion_entropy, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        return (class_entropy > thresholds["class_entropy"]) | (lesion_entropy > thresholds["lesion_entropy"])


def flag_table(records: Sequence[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Rows ``flagged``, ``unflagged``, ``all``: ``n``, mean ``dice`` and ``accuracy`` (NaN for an empty group) of
    records with keys ``review`` (bool), ``dice``, ``label``, ``pred_class``."""
    rows = []
    for group, keep in (("flagged", lambda r: r["review"]), ("unflagged", lambda r: not r["review"]),
                        ("all", lambda r: True)):
        chosen = [r for r in records if keep(r)]
        rows.append({"group": group, "n": len(chosen),
                     "dice": float(np.mean([r["dice"] for r in chosen])) if chosen else math.nan,
                     "accuracy": float(np.mean([r["label"] == r["pred_class"] for r in chosen])) if chosen
                     else math.nan})
    return rows


def risk_coverage(scores: Sequence[float], uncertainty: Sequence[float]) -> Dict[str, np.ndarray]:
    """``coverage`` (k/n, k = 1…n) and ``score`` (mean of ``scores`` over the k most certain images).

    Ties keep the input order (stable sort); NaN uncertainty sorts last (most uncertain)."""
    scores = np.asarray(scores, dtype=np.float64)
    uncertainty = np.asarray(uncertainty, dtype=np.float64)
    if scores.shape != uncertainty.shape or scores.ndim != 1 or scores.size == 0:
        raise ValueError("risk_coverage needs two equal-length, non-empty 1-D sequences")
    order = np.argsort(np.where(np.isnan(uncertainty), np.inf, uncertainty), kind="stable")
    k = np.arange(1, scores.size + 1)
    return {"coverage": k / scores.size, "score": np.cumsum(scores[order]) / k}


def score_at_coverage(curve: Dict[str, np.ndarray], coverage: float) -> float:
    """The curve's score when keeping ⌈coverage·n⌉ images (at least one)."""
    n = curve["coverage"].size
    return float(curve["score"][max(1, math.ceil(coverage * n - 1e-9)) - 1])
