"""One training iteration of each method: ``supervised``, ``fixmatch`` and ``hermes`` (DESIGN §4).

A step returns the total loss (a graph to back-propagate) and a dict of detached 0-dim tensors for logging;
nothing here synchronises with the host. Which terms run is read from the config, so that every ablation is a
setting, not a new script.

Total loss (weights from ``config['loss']``, names as logged)::

    seg.w * (seg_sup + seg_unsup.w * seg_unsup + pixel_contrast.w * pixel_contrast)
      + consistency.w * rampup(t) * consistency
      + cls.w * (cls_sup + cls_unsup.w * cls_unsup + image_contrast.w * image_contrast)
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Tuple

import torch
import torch.nn as nn

from Code.losses import (MemoryBank, PixelContrastLoss, SupConLoss, dual_threshold_mask, inter_task_consistency,
                         masked_cross_entropy, masked_dice_loss, seg_supervised_loss, sigmoid_rampup)

Tensor = torch.Tensor


@dataclass
class MethodSwitches:
    """What a method does; ``hermes`` reads the ablation switches, the others fix them."""

    unlabeled: bool
    combine: str
    image_contrast: bool
    pixel_contrast: bool
    memory_bank: bool
    consistency: bool

    @classmethod
    def from_config(cls, config: Dict[str, Any]) -> "MethodSwitches":
        method, comp, ssl = config["method"], config["components"], config["ssl"]
        if method == "supervised":
            return cls(False, "and", False, False, False, False)
        if method == "fixmatch":
            return cls(True, "confidence", False, False, False, False)
        combine = "confidence" if ssl["threshold"] == "single" else ssl["combine"]
        return cls(True, combine, comp["image_contrast"], comp["pixel_contrast"],
                   comp["memory_bank"] and (comp["image_contrast"] or comp["pixel_contrast"]), comp["consistency"])


@dataclass
class StepContext:
    """Loss modules, memory banks and settings shared by every step of a run."""

    config: Dict[str, Any]
    switches: MethodSwitches
    supcon: SupConLoss
    pixel_loss: PixelContrastLoss
    banks: nn.ModuleDict = field(default_factory=nn.ModuleDict)

    @classmethod
    def build(cls, config: Dict[str, Any], device: torch.device) -> "StepContext":
        c, m = config["contrast"], config["model"]
        switches = MethodSwitches.from_config(config)
        banks = nn.ModuleDict()
        if switches.memory_bank and switches.image_contrast:
            banks["image"] = MemoryBank(2, c["image_bank_size"], m["image_embed_dim"])
        if switches.memory_bank and switches.pixel_contrast:
            banks["pixel"] = MemoryBank(2, c["pixel_bank_size"], m["pixel_embed_dim"])
        pixel = PixelContrastLoss(temperature=c["temperature"], max_samples=c["max_samples"],
                                  max_views=c["max_views"], ignore_index=-1, min_pixels=c["min_pixels"])
        return cls(config, switches, SupConLoss(temperature=c["temperature"], num_classes=2), pixel, banks.to(device))


def _float(out: Dict[str, Tensor]) -> Dict[str, Tensor]:
    return {k: v.float() for k, v in out.items()}


def supervised_terms(out: Dict[str, Tensor], mask: Tensor, label: Tensor) -> Dict[str, Tensor]:
    """Labeled terms: segmentation CE + Dice, classification CE."""
    return {"seg_sup": seg_supervised_loss(out["seg_logits"], mask),
            "cls_sup": nn.functional.cross_entropy(out["cls_logits"], label)}


def combine_terms(terms: Dict[str, Tensor], config: Dict[str, Any], step: int) -> Tensor:
    """The weighted total of DESIGN §4 step 7; missing terms count as 0."""
    w = config["loss"]
    get = lambda name: terms.get(name, 0.0)  # noqa: E731
    ramp = sigmoid_rampup(step, config["ssl"]["consistency_rampup"])
    seg = get("seg_sup") + w["seg_unsup"] * get("seg_unsup") + w["pixel_contrast"] * get("pixel_contrast")
    cls = get("cls_sup") + w["cls_unsup"] * get("cls_unsup") + w["image_contrast"] * get("image_contrast")
    return w["seg"] * seg + w["cls"] * cls + w["consistency"] * ramp * get("consistency")


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


def pseudo_labels(out_weak: Dict[str, Tensor], ctx: StepContext, step: int) -> Tuple[Dict[str, Tensor], Dict[str, Tensor]]:
    """Dual-threshold (or single-threshold) pseudo-labels of the weak view, for images and pixels."""
    ssl, total = ctx.config["ssl"], ctx.config["train"]["iters"]
    kw = dict(tau_hi=ssl["tau_hi"], tau_lo=ssl["tau_lo"], combine=ctx.switches.combine)
    seg_probs = out_weak["seg_logits"].float().softmax(1)
    cls_probs = out_weak["cls_logits"].float().softmax(1)
    seg_pseudo, seg_keep, seg_stats = dual_threshold_mask(seg_probs, step, total, **kw)
    cls_pseudo, cls_keep, cls_stats = dual_threshold_mask(cls_probs, step, total, **kw)
    stats = {f"seg_{k}": v for k, v in seg_stats.items()}
    stats.update({f"cls_{k}": v for k, v in cls_stats.items()})
    labels = {"seg_pseudo": seg_pseudo, "seg_keep": seg_keep, "cls_pseudo": cls_pseudo, "cls_keep": cls_keep,
              "seg_probs": seg_probs}
    return labels, stats


def contrast_terms(out_l: Dict[str, Tensor], out_w: Dict[str, Tensor], out_s: Dict[str, Tensor], mask: Tensor,
                   pl: Dict[str, Tensor], ctx: StepContext) -> Dict[str, Tensor]:
    """Image-level SupCon over (weak, strong) embeddings and pixel-level contrast over labeled + strong views."""
    terms: Dict[str, Tensor] = {}
    sw, banks = ctx.switches, ctx.banks
    if sw.image_contrast:
        feats = torch.stack([out_w["image_embed"].detach(), out_s["image_embed"]], dim=1)
        bank = banks["image"].features(padded=True) if "image" in banks else (None, None)
        terms["image_contrast"] = ctx.supcon(feats, pl["cls_pseudo"], weights=pl["cls_keep"].float(),
                                             bank_features=bank[0], bank_labels=bank[1])
    if sw.pixel_contrast:
        ignore = torch.full_like(pl["seg_pseudo"], -1)
        pixel_labels = torch.cat([mask, torch.where(pl["seg_keep"], pl["seg_pseudo"], ignore)])
        embed = torch.cat([out_l["pixel_embed"], out_s["pixel_embed"]])
        predict = torch.cat([out_l["seg_logits"], out_s["seg_logits"]]).argmax(1)
        terms["pixel_contrast"] = ctx.pixel_loss(embed, pixel_labels, predict, bank=banks["pixel"] if "pixel" in banks else None)
    return terms


def update_banks(out_l: Dict[str, Tensor], out_w: Dict[str, Tensor], label: Tensor, pl: Dict[str, Tensor],
                 ctx: StepContext) -> None:
    """Enqueue labeled image embeddings, kept weak-view embeddings and the sampled pixel anchors (all detached)."""
    if "image" in ctx.banks:  # label −1 = not kept: the bank skips it (no boolean indexing, no host sync)
        kept_labels = torch.where(pl["cls_keep"], pl["cls_pseudo"], torch.full_like(pl["cls_pseudo"], -1))
        feats = torch.cat([out_l["image_embed"].detach(), out_w["image_embed"]])
        ctx.banks["image"].enqueue(feats, torch.cat([label, kept_labels]))
    if "pixel" in ctx.banks:
        sampled = ctx.pixel_loss.last_anchors
        if sampled is not None:
            ctx.banks["pixel"].enqueue(*sampled)


def train_step(model: nn.Module, labeled, unlabeled, step: int, ctx: StepContext
               ) -> Tuple[Tensor, Dict[str, Tensor], Optional[Dict[str, Tensor]]]:
    """One iteration: ``(total loss, detached terms and stats, tensors for TensorBoard images)``."""
    x, mask, label = labeled
    if not ctx.switches.unlabeled:
        out_l = _float(model(x))
        terms = supervised_terms(out_l, mask, label)
        vis = {"input": x, "gt": mask, "pred_logits": out_l["seg_logits"], "saliency": out_l.get("saliency")}
        return combine_terms(terms, ctx.config, step), {k: v.detach() for k, v in terms.items()}, vis
    weak, strong = unlabeled
    with torch.no_grad():
        out_w = _float(model(weak))
    out = _float(model(torch.cat([x, strong])))
    n = x.shape[0]
    out_l = {k: v[:n] for k, v in out.items()}
    out_s = {k: v[n:] for k, v in out.items()}
    pl, stats = pseudo_labels(out_w, ctx, step)
    terms = supervised_terms(out_l, mask, label)
    terms["seg_unsup"] = seg_unsup_loss(out_s["seg_logits"], pl, ctx.config["ssl"]["seg_unsup_loss"])
    terms["cls_unsup"] = masked_cross_entropy(out_s["cls_logits"], pl["cls_pseudo"], pl["cls_keep"])
    warm = step >= ctx.config["ssl"]["contrast_warmup"]
    if warm:
        terms.update(contrast_terms(out_l, out_w, out_s, mask, pl, ctx))
    if ctx.switches.consistency:
        terms["consistency"] = inter_task_consistency(out_s["consist_seg"], out_s["consist_cls"])
    total = combine_terms(terms, ctx.config, step)
    if warm:
        update_banks(out_l, out_w, label, pl, ctx)
    logs = {k: v.detach() for k, v in terms.items()}
    logs.update({k: v.detach() for k, v in stats.items()})
    vis = {"input": weak, "pseudo": pl["seg_pseudo"], "keep": pl["seg_keep"], "seg_probs": pl["seg_probs"],
           "saliency": out_s.get("saliency"), "gt": mask, "pred_logits": out_l["seg_logits"]}
    return total, logs, vis
