"""Dual-threshold pseudo-label selection (docs/design.md, "The training step", step 3).

Given the weak view's softmax ``p`` (B×C for images, B×C×H×W for pixels) and the pseudo-label ŷ = argmax_c p:

    r_c   = #{ŷ == c} / #ŷ                                  share of class c in the batch (or a given prior)
    τ_c   = τ_hi − (τ_hi − τ_lo)·(1 − r_c)                  class-adaptive confidence threshold

With ``relative_to`` = π (the labeled class shares; ``ssl.class_ratio: relative``, beyond the paper) r_c is
measured against what the labeled data lead one to expect, normalised as FlexMatch normalises learning effects::

    q_c   = r_c / π_c,   r̃_c = q_c / max_c' q_c'              r̃ = 1 for every class whose pseudo-labels are as
                                                            common as its labels: τ_c = τ_hi (FixMatch's τ)

so a class that is rare by nature (lesion pixels) is no longer thresholded near τ_lo = 0.5, which in a two-class
problem is no threshold at all (the arg-max already has p > 0.5).
    confident ⇔ p_ŷ > τ_ŷ
    H     = −Σ_c p_c·log p_c                                 entropy (0·log 0 = 0)
    ρ(t)  = exp(−5·(1 − t/T)²),  t clipped to [0, T]         sigmoid ramp-up
    η(t)  = (0.75 + 0.25·ρ(t))·ln C                          uncertainty threshold, grows from ≈0.755·ln C to ln C
    certain ⇔ H < η(t)
    keep  = confident ∧ certain      (combine="and", the paper's certainty matrix; default)
          = confident ∨ certain      (combine="or", the reference's segmentation variant)
          = p_ŷ > τ_hi               (combine="confidence", FixMatch's single fixed threshold)
"""
from __future__ import annotations

import math
from typing import Dict, Optional, Tuple

import torch

from Code.errors import UserError

COMBINE_MODES = ("and", "or", "confidence")


def sigmoid_rampup(step: float, total: float) -> float:
    """ρ(t) = exp(−5·(1 − t/T)²) with t clipped to [0, T]; 1.0 when ``total`` ≤ 0 (no ramp)."""
    if total <= 0:
        return 1.0
    t = min(max(float(step), 0.0), float(total))
    phase = 1.0 - t / float(total)
    return math.exp(-5.0 * phase * phase)


def entropy_threshold(step: float, total: float, num_classes: int) -> float:
    """η(t) = (0.75 + 0.25·ρ(t))·ln C."""
    return (0.75 + 0.25 * sigmoid_rampup(step, total)) * math.log(num_classes)


def relative_ratio(ratio: torch.Tensor, prior: torch.Tensor) -> torch.Tensor:
    """r̃ = q / max q with q = r / π (C each; π clamped to ≥ 1e-8): the class shares relative to the expected ones."""
    q = ratio.float() / prior.detach().float().clamp_min(1e-8)
    return q / q.max().clamp_min(1e-12)


def _check_settings(probs: torch.Tensor, tau_hi: float, tau_lo: float, combine: str) -> None:
    if combine not in COMBINE_MODES:
        raise UserError(f"dual threshold combine={combine!r} is not one of {', '.join(COMBINE_MODES)}")
    if not 0.0 <= tau_lo <= tau_hi <= 1.0:
        raise UserError(f"dual threshold needs 0 <= tau_lo <= tau_hi <= 1, got tau_lo={tau_lo}, tau_hi={tau_hi}")
    if probs.dim() < 2 or probs.shape[1] < 2:
        raise UserError(f"dual threshold expects probabilities B×C(×H×W) with C >= 2, got shape {tuple(probs.shape)}")


@torch.no_grad()
def dual_threshold_mask(
    probs: torch.Tensor,
    step: float,
    total_steps: float,
    tau_hi: float = 0.95,
    tau_lo: float = 0.5,
    combine: str = "and",
    class_ratio: Optional[torch.Tensor] = None,
    relative_to: Optional[torch.Tensor] = None,
) -> Tuple[torch.Tensor, torch.Tensor, Dict[str, torch.Tensor]]:
    """Pseudo-labels and the mask of those to keep (see the module docstring for the equations).

    Args:
        probs: softmax probabilities, B×C (images) or B×C×H×W (pixels); any float dtype (computed in float32).
        step, total_steps: t and T of the ramp-up (host numbers, not tensors).
        class_ratio: optional r (C) to use instead of the batch's shares (e.g. the pool's estimated prior).
        relative_to: optional π (C, positive): r becomes r̃ = (r/π) / max(r/π) (module docstring).
    Returns:
        pseudo: long, B (or B×H×W), argmax over C.
        keep: bool, same shape as ``pseudo``.
        stats: 0-dim float tensors on ``probs.device`` (no host sync here): ``threshold_<c>``, ``class_ratio_<c>``,
            ``keep_ratio_<c>`` (share of pseudo == c that is kept) for each class c, and ``keep_ratio``,
            ``confident_ratio``, ``certain_ratio``, ``entropy_threshold``.
    No gradient flows through any output.
    """
    _check_settings(probs, tau_hi, tau_lo, combine)
    probs = probs.detach().float()
    num_classes = probs.shape[1]
    confidence, pseudo = probs.max(dim=1)
    flat_pseudo = pseudo.reshape(-1)
    counts = torch.zeros(num_classes, device=probs.device).scatter_add_(
        0, flat_pseudo, torch.ones_like(flat_pseudo, dtype=torch.float32))
    if class_ratio is None:
        class_ratio = counts / max(flat_pseudo.numel(), 1)
    else:
        class_ratio = class_ratio.detach().float().to(probs.device)
    if relative_to is not None:
        class_ratio = relative_ratio(class_ratio, relative_to.to(probs.device))
    if combine == "confidence":
        thresholds = torch.full((num_classes,), float(tau_hi), device=probs.device)
    else:
        thresholds = tau_hi - (tau_hi - tau_lo) * (1.0 - class_ratio)
    confident = confidence > thresholds[pseudo]
    entropy = -torch.special.xlogy(probs, probs).sum(dim=1)
    eta = entropy_threshold(step, total_steps, num_classes)
    certain = entropy < eta
    if combine == "and":
        keep = confident & certain
    elif combine == "or":
        keep = confident | certain
    else:
        keep = confident
    stats = _threshold_stats(flat_pseudo, keep.reshape(-1), confident, certain, thresholds, class_ratio, counts)
    stats["entropy_threshold"] = torch.tensor(eta, device=probs.device)
    return pseudo, keep, stats


def _threshold_stats(flat_pseudo, flat_keep, confident, certain, thresholds, class_ratio, counts):
    """Logging values as 0-dim tensors (the trainer converts them when it logs)."""
    kept_per_class = torch.zeros_like(counts).scatter_add_(0, flat_pseudo, flat_keep.float())
    keep_ratio_per_class = kept_per_class / counts.clamp_min(1.0)
    stats = {
        "keep_ratio": flat_keep.float().mean(),
        "confident_ratio": confident.float().mean(),
        "certain_ratio": certain.float().mean(),
    }
    for c in range(thresholds.numel()):
        stats[f"threshold_{c}"] = thresholds[c]
        stats[f"class_ratio_{c}"] = class_ratio[c]
        stats[f"keep_ratio_{c}"] = keep_ratio_per_class[c]
    return stats
