"""Evaluation metrics: per-image segmentation counts and scores, image-level classification scores, best-model choice.

Everything is computed **per image** first, then summarised, so no number depends on the batch size (the
reference averaged Dice over batches, which does). The lesion (class 1) is the positive class of the masks and
malignant (class 1) the positive class of the labels. Nothing here knows about files or command lines.

Conventions (also stated in :func:`summarize_metrics`):

- per-image Dice = ``2tp / (2tp + fp + fn)`` and IoU = ``tp / (tp + fp + fn)``; when the ground truth and the
  prediction are both empty (``tp + fp + fn == 0``) the image scores Dice = IoU = 1 (a correct "no lesion").
- a score whose denominator is zero over the whole set (e.g. sensitivity without malignant images) is NaN;
  AUC is NaN when only one class is present.
"""
from __future__ import annotations

import contextlib
import math
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from segmentation_models_pytorch.metrics import get_stats

METRIC_KEYS: Tuple[str, ...] = ("dice", "dice_global", "iou", "accuracy", "balanced_accuracy", "sensitivity",
                                 "specificity", "f1", "auc")
RECORD_KEYS: Tuple[str, ...] = ("name", "label", "pred_class", "prob_malignant", "dice", "iou", "tp", "fp", "fn", "tn")

BatchCallback = Callable[[Dict[str, Any]], None]


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


def _autocast(device: torch.device, amp: bool):
    """bf16 (or fp16 where bf16 is unsupported) autocast on CUDA when ``amp``; a no-op elsewhere."""
    if not amp or device.type != "cuda":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast(device_type="cuda", dtype=dtype)


def predict_batch(model: torch.nn.Module, images: torch.Tensor, amp: bool = False) -> Tuple[torch.Tensor, torch.Tensor]:
    """Run the model on a B×C×S×S batch (already on the model's device).

    Returns ``(seg_probs, cls_probs)`` in float32: B×2×S×S softmax over {background, lesion} and B×2 softmax over
    {benign, malignant}. Autograd is off, but the model may switch it on inside (gradient saliency).
    """
    with torch.no_grad(), _autocast(images.device, amp):
        out = model(images)
    seg = out["seg_logits"].float()
    if seg.shape[-2:] != images.shape[-2:]:
        seg = F.interpolate(seg, size=images.shape[-2:], mode="bilinear", align_corners=False)
    return seg.softmax(dim=1), out["cls_logits"].float().softmax(dim=1)


def evaluate_model(model: torch.nn.Module, loader: Iterable, device: torch.device | str, amp: bool = False,
                   on_batch: Optional[BatchCallback] = None) -> List[Dict[str, Any]]:
    """Evaluate ``model`` on every image of ``loader``; one record per image, independent of the batch size.

    ``loader`` yields eval-mode batches ``(images B×C×S×S float, masks B×S×S int64 {0,1}, labels B int64,
    names list[str])``. A record has the keys of :data:`RECORD_KEYS`: ``name``, ``label``, ``pred_class``,
    ``prob_malignant`` (softmax of the class logits), ``dice``, ``iou`` and the lesion pixel counts ``tp, fp, fn,
    tn`` at the evaluated resolution S×S. ``on_batch`` (optional) is called per batch with a dict of CPU tensors
    ``images``, ``masks``, ``pred_masks`` (B×S×S), ``labels``, ``pred_class``, ``prob_malignant`` and ``names``
    (for overlays), ``seg_probs`` (B×2×S×S) and ``cls_probs`` (B×2) (for uncertainty). The model's train/eval mode is restored afterwards.
    """
    device = torch.device(device)
    was_training = model.training
    model.eval()
    records: List[Dict[str, Any]] = []
    try:
        for images, masks, labels, names in loader:
            seg_probs, cls_probs = predict_batch(model, images.to(device, non_blocking=True), amp)
            pred_masks = seg_probs.argmax(dim=1).cpu()
            cls_probs = cls_probs.cpu()
            masks, labels = masks.long().cpu(), labels.long().reshape(-1).cpu()
            names = [names] if isinstance(names, str) else list(names)
            records.extend(_batch_records(pred_masks, masks, labels, cls_probs, names))
            if on_batch is not None:
                on_batch({"images": images.cpu(), "masks": masks, "pred_masks": pred_masks, "labels": labels,
                          "pred_class": cls_probs.argmax(dim=1), "prob_malignant": cls_probs[:, 1], "names": names,
                          "seg_probs": seg_probs.cpu(), "cls_probs": cls_probs})
    finally:
        model.train(was_training)
    return records


def _batch_records(pred_masks: torch.Tensor, masks: torch.Tensor, labels: torch.Tensor, cls_probs: torch.Tensor,
                   names: Sequence[str]) -> List[Dict[str, Any]]:
    """Per-image records of one batch (all tensors on the CPU; ``cls_probs`` B×2)."""
    tp, fp, fn, tn = (t.tolist() for t in pixel_counts(pred_masks, masks))
    pred_class = cls_probs.argmax(dim=1).tolist()
    prob_mal = cls_probs[:, 1].tolist()
    out = []
    for i, name in enumerate(names):
        out.append({"name": name, "label": int(labels[i]), "pred_class": int(pred_class[i]),
                    "prob_malignant": float(prob_mal[i]),
                    "dice": dice_from_counts(tp[i], fp[i], fn[i]), "iou": iou_from_counts(tp[i], fp[i], fn[i]),
                    "tp": int(tp[i]), "fp": int(fp[i]), "fn": int(fn[i]), "tn": int(tn[i])})
    return out


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


def _finite(value: Any) -> float:
    value = float(value)
    return -math.inf if math.isnan(value) else value


PRIMARY_METRIC = {"seg": "dice", "cls": "balanced_accuracy"}  # the val metric that chooses best.pt, per task


def best_score(metrics: Dict[str, Any], task: str, step: int) -> Tuple[float, float, int]:
    """The key that picks ``best.pt`` among evaluations; the larger tuple wins (one rule for both tasks):

    ``(primary, auc, −step)`` of the **val** metrics, with primary = ``dice`` for ``task == "seg"`` and
    ``balanced_accuracy`` for ``"cls"`` (not accuracy: on an imbalanced val it favours the majority class). A tie
    in the primary metric goes to the higher val AUC, a tie in both to the earliest ``step``. NaN counts as the
    lowest value (−inf). Every selection of a best step (the trainer's ``best.pt``, ``reporting.runs.select_row``)
    compares these tuples, so the result does not depend on the order in which evaluations are compared."""
    if task not in PRIMARY_METRIC:
        raise ValueError(f"unknown task {task!r} (expected 'seg' or 'cls')")
    return (_finite(metrics[PRIMARY_METRIC[task]]), _finite(metrics.get("auc", math.nan)), -int(step))
