"""Pieces shared by the methods: the forward passes of the views, the supervised and unsupervised terms, the
schedules and the weighted total (docs/design.md, "The training step").

Total loss (weights from ``config['loss']``, names as logged; ρ(t, T) = exp(−5(1 − t/T)²) the sigmoid ramp,
every schedule a fraction of ``train.iters``, see :func:`ramp_weights`); a method that does not compute a term
contributes 0 for it::

    seg.w * (seg_sup + ρ_u·seg_unsup.w * seg_unsup + ρ_c·pixel_contrast.w * pixel_contrast)
      + ρ_i·consistency.w * consistency
      + cls.w * (cls_sup + ρ_u·cls_unsup.w * cls_unsup + ρ_c·image_contrast.w * image_contrast)
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

import torch
import torch.nn as nn

from Code.engine.config import schedule_steps
from Code.losses import masked_cross_entropy, masked_dice_loss, seg_supervised_loss
from Code.methods.thresholds import sigmoid_rampup

Tensor = torch.Tensor
Outputs = Dict[str, Tensor]


def as_float(out: Outputs) -> Outputs:
    """The network's outputs in float32 (under autocast they may be half precision)."""
    return {k: v.float() for k, v in out.items()}


def supervised_terms(out: Outputs, mask: Tensor, label: Tensor) -> Dict[str, Tensor]:
    """Labeled terms: segmentation CE + Dice, classification CE."""
    return {"seg_sup": seg_supervised_loss(out["seg_logits"], mask),
            "cls_sup": nn.functional.cross_entropy(out["cls_logits"], label)}


def ramp_weights(config: Dict[str, Any], step: int) -> Dict[str, float]:
    """The schedule factors at iteration t (host floats), with T_x = ssl.x · train.iters:

    ρ_u = ρ(t, T_unsup_rampup); ρ_c = 0 for t < T_contrast_warmup, else ρ(t − T_contrast_warmup,
    T_contrast_rampup); ρ_i = ρ(t, T_consistency_rampup). A ramp of length 0 is 1 at once (the reference)."""
    warmup = schedule_steps(config, "contrast_warmup")
    contrast = 0.0 if step < warmup else sigmoid_rampup(step - warmup, schedule_steps(config, "contrast_rampup"))
    return {"unsup": sigmoid_rampup(step, schedule_steps(config, "unsup_rampup")), "contrast": contrast,
            "consistency": sigmoid_rampup(step, schedule_steps(config, "consistency_rampup"))}


def combine_terms(terms: Dict[str, Tensor], config: Dict[str, Any], step: int) -> Tensor:
    """The weighted total of the module docstring with the ramps of :func:`ramp_weights`; missing terms count 0."""
    w, r = config["loss"], ramp_weights(config, step)
    get = lambda name: terms.get(name, 0.0)  # noqa: E731
    seg = (get("seg_sup") + r["unsup"] * w["seg_unsup"] * get("seg_unsup")
           + r["contrast"] * w["pixel_contrast"] * get("pixel_contrast"))
    cls = (get("cls_sup") + r["unsup"] * w["cls_unsup"] * get("cls_unsup")
           + r["contrast"] * w["image_contrast"] * get("image_contrast"))
    return w["seg"] * seg + w["cls"] * cls + w["consistency"] * r["consistency"] * get("consistency")


def seg_unsup_loss(logits: Tensor, pl: Dict[str, Tensor], kind: str) -> Tensor:
    """Strong-view segmentation loss against the weak view's kept pseudo-labels.

    ``dice`` (the reference) is a soft Dice over the kept pixels; when most kept pixels are confident background it
    mostly pushes lesion probabilities down, which can collapse a young model to all-background. ``ce`` weighs each
    kept pixel alone (FixMatch, UniMatch); ``ce_dice`` is the mean of both.
    """
    pseudo, keep = pl["seg_pseudo"], pl["seg_keep"]
    if kind == "dice":
        return masked_dice_loss(logits, pseudo, keep)
    ce = masked_cross_entropy(logits, pseudo, keep)
    return ce if kind == "ce" else 0.5 * (ce + masked_dice_loss(logits, pseudo, keep))


def kept_or_ignore(pseudo: Tensor, keep: Tensor) -> Tensor:
    """Pseudo-labels where kept, −1 (ignored by the contrastive losses and the banks) elsewhere."""
    return torch.where(keep, pseudo, torch.full_like(pseudo, -1))


def forward_views(model: nn.Module, x: Tensor, weak: Tensor, strong: Tensor, teacher: str,
                  ema: Optional[nn.Module] = None) -> Tuple[Outputs, Outputs, Outputs]:
    """``(out_labeled, out_weak (detached), out_strong)`` under the teacher mode of Code/engine/teacher.py."""
    n, u = x.shape[0], weak.shape[0]
    if teacher == "joint":
        out = as_float(model(torch.cat([x, weak, strong])))
        return ({k: v[:n] for k, v in out.items()}, {k: v[n:n + u].detach() for k, v in out.items()},
                {k: v[n + u:] for k, v in out.items()})
    if teacher == "ema":
        if ema is None:
            raise ValueError("ssl.teacher 'ema' needs the EMA teacher module")
        out_w = as_float(ema(weak))
    else:
        was_training = model.training
        model.train(teacher == "train")
        with torch.no_grad():
            out_w = as_float(model(weak))
        model.train(was_training)
    out = as_float(model(torch.cat([x, strong])))
    return ({k: v[:n] for k, v in out.items()}, {k: v.detach() for k, v in out_w.items()},
            {k: v[n:] for k, v in out.items()})
