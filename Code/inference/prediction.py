"""Batched prediction: a model's probabilities for a batch, and per-image records over a whole loader.

:func:`predict_batch` is the one forward pass of inference (``evaluate.py``, ``predict.py``, ``suggest.py``,
the trainer's evaluations); :func:`evaluate_model` turns a labeled loader into one record per image
(:data:`Code.inference.metrics.RECORD_KEYS`), so no number depends on the batch size.
"""
from __future__ import annotations

import contextlib
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from Code.inference.metrics import dice_from_counts, iou_from_counts, pixel_counts

BatchCallback = Callable[[Dict[str, Any]], None]


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
    names list[str])``. A record has the keys of :data:`~Code.inference.metrics.RECORD_KEYS`: ``name``, ``label``, ``pred_class``,
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
