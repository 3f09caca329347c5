"""Fitting the calibration document on a validation part, and the per-image uncertainty it is fitted on.

- :class:`UncertaintyCollector`: ``on_batch`` callback of :func:`Code.inference.prediction.evaluate_model` keeping
  each image's ``class_entropy``, ``lesion_entropy`` (:func:`Code.inference.uncertainty.image_uncertainty`) and
  class probabilities ``probs`` (K floats, as the model gave them);
- :func:`fit_calibration`: run the model on a validation part, fit the temperature (``calibration.py``) on the
  class log-probabilities, then choose the review thresholds (``uncertainty.py``) on the *calibrated* class
  entropies and the lesion entropies; returns the document stored as ``<checkpoint>.calibration.json``.
"""
from __future__ import annotations

from typing import Any, Dict

import torch

from Code.errors import UserError
from Code.inference.calibration import N_BINS, calibration_metrics, fit_temperature, nll, rescale_probs
from Code.inference.prediction import evaluate_model
from Code.inference.uncertainty import DEFAULT_QUANTILE, fit_review_thresholds, image_uncertainty, normalized_entropy


class UncertaintyCollector:
    """``on_batch`` callback: ``values[name] = {"class_entropy", "lesion_entropy", "probs"}`` per image.

    Subclasses may override :meth:`after_batch` to use the batch's uncertainty maps (e.g. to draw them)."""

    def __init__(self):
        self.values: Dict[str, Dict[str, Any]] = {}

    def __call__(self, batch: Dict[str, Any]) -> None:
        u = image_uncertainty(batch["seg_probs"], batch["cls_probs"], batch["pred_masks"] == 1)
        for i, name in enumerate(batch["names"]):
            self.values[name] = {"class_entropy": float(u["class_entropy"][i]),
                                 "lesion_entropy": float(u["lesion_entropy"][i]), "probs": batch["cls_probs"][i]}
        self.after_batch(batch, u)

    def after_batch(self, batch: Dict[str, Any], uncertainty: Dict[str, torch.Tensor]) -> None:
        """Called after each batch with its ``image_uncertainty`` result; nothing by default."""


def fit_calibration(model: torch.nn.Module, loader, device: torch.device, amp: bool,
                    quantile: float = DEFAULT_QUANTILE) -> Dict[str, Any]:
    """Temperature and review thresholds fitted on the labeled images of ``loader`` (a validation part).

    The temperature is fitted on log P(class) (equal to the logits up to a per-image constant, which softmax
    ignores), the thresholds on the calibrated class entropy and on the lesion entropy (see ``uncertainty.py``).
    """
    collector = UncertaintyCollector()
    records = evaluate_model(model, loader, device, amp=amp, on_batch=collector)
    if not records:
        raise UserError("the validation part lists no images: nothing to fit the calibration on")
    labels = torch.tensor([r["label"] for r in records])
    probs = torch.stack([collector.values[r["name"]]["probs"] for r in records]).double()
    log_probs = probs.clamp_min(1e-300).log()
    temperature = fit_temperature(log_probs, labels)
    calibrated = rescale_probs(probs, temperature)
    thresholds = fit_review_thresholds(normalized_entropy(calibrated, dim=1).tolist(),
                                       [collector.values[r["name"]]["lesion_entropy"] for r in records], quantile)
    before = calibration_metrics(probs[:, 1].tolist(), labels.tolist())
    after = calibration_metrics(calibrated[:, 1].tolist(), labels.tolist())
    return {"temperature": temperature, "review_thresholds": thresholds, "review_quantile": quantile,
            "n_val": len(records), "val_nll_before": nll(log_probs, labels),
            "val_nll_after": nll(log_probs, labels, temperature), "val_ece_before": before["ece"],
            "val_ece_after": after["ece"], "ece_bins": N_BINS}
