"""Evaluation metrics: per-image segmentation counts and scores, image-level classification scores.

Everything is computed **per image** first, then summarised, so no number depends on the batch size (the
reference averaged Dice over batches, which does). The lesion (class 1) is the positive class of the masks and
malignant (class 1) the positive class of the labels. Nothing here knows about files or command lines. The
records come from :func:`Code.inference.prediction.evaluate_model`; the training's choice of ``best.pt`` from
these metrics is :func:`Code.engine.selection.best_score`.

Conventions (also stated in :func:`summarize_metrics`):

- per-image Dice = ``2tp / (2tp + fp + fn)`` and IoU = ``tp / (tp + fp + fn)``; when the ground truth and the
  prediction are both empty (``tp + fp + fn == 0``) the image scores Dice = IoU = 1 (a correct "no lesion").
- a score whose denominator is zero over the whole set (e.g. sensitivity without malignant images) is NaN;
  AUC is NaN when only one class is present.
"""
from __future__ import annotations

import math
from typing import Any, Dict, Sequence, Tuple

import numpy as np
import torch
from segmentation_models_pytorch.metrics import get_stats

METRIC_KEYS: Tuple[str, ...] = ("dice", "dice_global", "iou", "accuracy", "balanced_accuracy", "sensitivity",
                                 "specificity", "f1", "auc")
RECORD_KEYS: Tuple[str, ...] = ("name", "label", "pred_class", "prob_malignant", "dice", "iou", "tp", "fp", "fn", "tn")


def pixel_counts(pred: torch.Tensor, target: torch.Tensor) -> Tuple[torch.Tensor, ...]:
    """Lesion-class pixel counts per image.

    ``pred`` and ``target``: B×H×W integer masks with values {0, 1}. Returns ``(tp, fp, fn, tn)``, each a
    length-B int64 tensor (smp's ``get_stats`` in binary mode).
    """
    if pred.shape != target.shape or pred.dim() != 3:
        raise ValueError(f"pred and target must both be B×H×W, got {tuple(pred.shape)} and {tuple(target.shape)}")
    stats = get_stats(pred.long().unsqueeze(1), target.long().unsqueeze(1), mode="binary")
    return tuple(s.reshape(-1) for s in stats)


def dice_from_counts(tp: int, fp: int, fn: int) -> float:
    """``2tp / (2tp + fp + fn)``; 1.0 when ground truth and prediction are both empty."""
    denom = 2 * tp + fp + fn
    return 1.0 if denom == 0 else 2.0 * tp / denom


def iou_from_counts(tp: int, fp: int, fn: int) -> float:
    """``tp / (tp + fp + fn)``; 1.0 when ground truth and prediction are both empty."""
    denom = tp + fp + fn
    return 1.0 if denom == 0 else tp / denom


def _ratio(num: float, denom: float) -> float:
    return float(num) / float(denom) if denom else math.nan


def summarize_metrics(records: Sequence[Dict[str, Any]]) -> Dict[str, float]:
    """Set-level metrics from per-image records, keys in the order of :data:`METRIC_KEYS` (all in [0, 1]).

    - ``dice``: mean over images of the per-image lesion Dice (both masks empty → 1, else 2tp/(2tp+fp+fn));
    - ``dice_global``: 2Σtp / (2Σtp + Σfp + Σfn) over all pixels of the set (1 if that is 0/0);
    - ``iou``: mean over images of the per-image lesion IoU (both empty → 1, else tp/(tp+fp+fn));
    - ``accuracy``: share of images with ``pred_class == label``;
    - ``balanced_accuracy``: (sensitivity + specificity) / 2 (NaN if either is undefined);
    - ``sensitivity``: malignant recall TP/(TP+FN); ``specificity``: benign recall TN/(TN+FP);
    - ``f1``: malignant F1 = 2TP/(2TP+FP+FN);
    - ``auc``: ROC AUC of ``prob_malignant`` (scikit-learn), NaN if only one class is present.
    Undefined ratios (zero denominator) are NaN. Raises ``ValueError`` on an empty list.
    """
    if not records:
        raise ValueError("summarize_metrics needs at least one record")
    labels = np.array([int(r["label"]) for r in records])
    preds = np.array([int(r["pred_class"]) for r in records])
    probs = np.array([float(r["prob_malignant"]) for r in records])
    tp_s, fp_s, fn_s = (sum(int(r[k]) for r in records) for k in ("tp", "fp", "fn"))
    ctp = int(np.sum((preds == 1) & (labels == 1)))
    ctn = int(np.sum((preds == 0) & (labels == 0)))
    cfp = int(np.sum((preds == 1) & (labels == 0)))
    cfn = int(np.sum((preds == 0) & (labels == 1)))
    from sklearn.metrics import roc_auc_score  # imported here: scikit-learn takes seconds to import

    auc = float(roc_auc_score(labels, probs)) if len(np.unique(labels)) == 2 else math.nan
    sensitivity, specificity = _ratio(ctp, ctp + cfn), _ratio(ctn, ctn + cfp)
    return {
        "dice": float(np.mean([r["dice"] for r in records])),
        "dice_global": dice_from_counts(tp_s, fp_s, fn_s),
        "iou": float(np.mean([r["iou"] for r in records])),
        "accuracy": float(np.mean(preds == labels)),
        "balanced_accuracy": (sensitivity + specificity) / 2.0,
        "sensitivity": sensitivity,
        "specificity": specificity,
        "f1": _ratio(2 * ctp, 2 * ctp + cfp + cfn),
        "auc": auc,
    }
