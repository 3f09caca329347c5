"""One training iteration of each method: ``supervised``, ``fixmatch`` and ``hermes`` (DESIGN §4).

A step returns the total loss (a graph to back-propagate) and a dict of detached 0-dim tensors for logging;
nothing here synchronises with the host. Which terms run is read from the config, so that every ablation is a
setting, not a new script.

Total loss (weights from ``config['loss']``, names as logged; ρ(t, T) = exp(−5(1 − t/T)²) the sigmoid ramp,
every schedule a fraction of ``train.iters``, see :func:`ramp_weights`)::

    seg.w * (seg_sup + ρ_u·seg_unsup.w * seg_unsup + ρ_c·pixel_contrast.w * pixel_contrast)
      + ρ_i·consistency.w * consistency
      + cls.w * (cls_sup + ρ_u·cls_unsup.w * cls_unsup + ρ_c·image_contrast.w * image_contrast)

Who produces the weak view's pseudo-labels is ``ssl.teacher`` (Code/engine/teacher.py).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Tuple

import torch
import torch.nn as nn

from Code.engine.config import schedule_steps
from Code.losses import (MemoryBank, PixelContrastLoss, PoolPrior, SupConLoss, adjust_to_prior, dual_threshold_mask,
                         inter_task_consistency, masked_cross_entropy, masked_dice_loss, seg_supervised_loss,
                         sigmoid_rampup)

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
    teacher: str = "joint"
    prior_aware: bool = False
    pool_ratio: bool = False
    consistency_mode: str = "cosine"

    @classmethod
    def from_config(cls, config: Dict[str, Any]) -> "MethodSwitches":
        """``supervised`` and ``fixmatch`` fix the Hermes components off; the teacher and the prior-aware
        classification pseudo-labels are shared by every method with unlabeled data (a fair comparison)."""
        method, comp, ssl = config["method"], config["components"], config["ssl"]
        shared = dict(teacher=ssl["teacher"], prior_aware=ssl["prior_aware"], pool_ratio=ssl["class_ratio"] == "pool",
                      consistency_mode=comp["consistency_mode"])
        if method == "supervised":
            return cls(False, "and", False, False, False, False)
        if method == "fixmatch":
            return cls(True, "confidence", False, False, False, False, **shared)
        combine = "confidence" if ssl["threshold"] == "single" else ssl["combine"]
        return cls(True, combine, comp["image_contrast"], comp["pixel_contrast"],
                   comp["memory_bank"] and (comp["image_contrast"] or comp["pixel_contrast"]), comp["consistency"],
                   **shared)


@dataclass
class StepContext:
    """Loss modules, memory banks and settings shared by every step of a run."""

    config: Dict[str, Any]
    switches: MethodSwitches
    supcon: SupConLoss
    pixel_loss: PixelContrastLoss
    banks: nn.ModuleDict = field(default_factory=nn.ModuleDict)
    pool_prior: Optional[PoolPrior] = None
    labeled_prior: Optional[Tensor] = None

    @classmethod
    def build(cls, config: Dict[str, Any], device: torch.device,
              labeled_prior: Optional[Tensor] = None) -> "StepContext":
        """``labeled_prior``: class shares of the labeled list (C); default uniform (balanced budgets)."""
        c, m = config["contrast"], config["model"]
        switches = MethodSwitches.from_config(config)
        banks = nn.ModuleDict()
        if switches.memory_bank and switches.image_contrast:
            banks["image"] = MemoryBank(2, c["image_bank_size"], m["image_embed_dim"])
        if switches.memory_bank and switches.pixel_contrast:
            banks["pixel"] = MemoryBank(2, c["pixel_bank_size"], m["pixel_embed_dim"])
        pixel = PixelContrastLoss(temperature=c["temperature"], max_samples=c["max_samples"],
                                  max_views=c["max_views"], ignore_index=-1, min_pixels=c["min_pixels"])
        pool_prior = None
        if switches.unlabeled and (switches.prior_aware or switches.pool_ratio):
            pool_prior = PoolPrior(2, config["ssl"]["prior_momentum"]).to(device)
        prior = torch.full((2,), 0.5) if labeled_prior is None else labeled_prior.float()
        return cls(config, switches, SupConLoss(temperature=c["temperature"], num_classes=2), pixel, banks.to(device),
                   pool_prior, prior.to(device))


def _float(out: Dict[str, Tensor]) -> Dict[str, Tensor]:
    return {k: v.float() for k, v in out.items()}


def supervised_terms(out: Dict[str, Tensor], mask: Tensor, label: Tensor) -> Dict[str, Tensor]:
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
    """The weighted total of DESIGN §4 step 7 with the ramps of :func:`ramp_weights`; missing terms count as 0."""
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


def pseudo_labels(out_weak: Dict[str, Tensor], ctx: StepContext, step: int) -> Tuple[Dict[str, Tensor], Dict[str, Tensor]]:
    """Dual-threshold (or single-threshold) pseudo-labels of the weak view, for images and pixels.

    With a pool prior (``ssl.prior_aware`` or ``ssl.class_ratio: pool``) the teacher's class probabilities first
    update the running EM estimate π of the unlabeled prior; ``prior_aware`` re-weights them from the labeled
    prior to π, ``class_ratio: pool`` uses π as r_c of the class-adaptive threshold."""
    ssl, total, sw = ctx.config["ssl"], ctx.config["train"]["iters"], ctx.switches
    kw = dict(tau_hi=ssl["tau_hi"], tau_lo=ssl["tau_lo"], combine=sw.combine)
    seg_probs = out_weak["seg_logits"].detach().float().softmax(1)
    cls_probs = out_weak["cls_logits"].detach().float().softmax(1)
    ratio, stats = None, {}
    if ctx.pool_prior is not None:
        prior = ctx.pool_prior.update(cls_probs, ctx.labeled_prior)
        stats["cls_pool_prior_1"] = prior[1].clone()
        if sw.prior_aware:
            cls_probs = adjust_to_prior(cls_probs, prior, ctx.labeled_prior)
        ratio = prior if sw.pool_ratio else None
    seg_pseudo, seg_keep, seg_stats = dual_threshold_mask(seg_probs, step, total, **kw)
    cls_pseudo, cls_keep, cls_stats = dual_threshold_mask(cls_probs, step, total, class_ratio=ratio, **kw)
    stats.update({f"seg_{k}": v for k, v in seg_stats.items()})
    stats.update({f"cls_{k}": v for k, v in cls_stats.items()})
    labels = {"seg_pseudo": seg_pseudo, "seg_keep": seg_keep, "cls_pseudo": cls_pseudo, "cls_keep": cls_keep,
              "seg_probs": seg_probs, "cls_probs": cls_probs}
    return labels, stats


def kept_or_ignore(pseudo: Tensor, keep: Tensor) -> Tensor:
    """Pseudo-labels where kept, −1 (ignored by the contrastive losses and the banks) elsewhere."""
    return torch.where(keep, pseudo, torch.full_like(pseudo, -1))


def contrast_terms(out_l: Dict[str, Tensor], out_w: Dict[str, Tensor], out_s: Dict[str, Tensor], mask: Tensor,
                   pl: Dict[str, Tensor], ctx: StepContext) -> Dict[str, Tensor]:
    """Image-level SupCon over (weak, strong) embeddings and pixel-level contrast over labeled + strong views."""
    terms: Dict[str, Tensor] = {}
    sw, banks = ctx.switches, ctx.banks
    if sw.image_contrast:  # images that failed the thresholds are label −1: neither anchors nor positives
        feats = torch.stack([out_w["image_embed"].detach(), out_s["image_embed"]], dim=1)
        bank = banks["image"].features(padded=True) if "image" in banks else (None, None)
        terms["image_contrast"] = ctx.supcon(feats, kept_or_ignore(pl["cls_pseudo"], pl["cls_keep"]),
                                             bank_features=bank[0], bank_labels=bank[1])
    if sw.pixel_contrast:
        pixel_labels = torch.cat([mask, kept_or_ignore(pl["seg_pseudo"], pl["seg_keep"])])
        embed = torch.cat([out_l["pixel_embed"], out_s["pixel_embed"]])
        predict = torch.cat([out_l["seg_logits"], out_s["seg_logits"]]).argmax(1)
        terms["pixel_contrast"] = ctx.pixel_loss(embed, pixel_labels, predict, bank=banks["pixel"] if "pixel" in banks else None)
    return terms


def update_banks(out_l: Dict[str, Tensor], out_w: Dict[str, Tensor], label: Tensor, pl: Dict[str, Tensor],
                 ctx: StepContext) -> None:
    """Enqueue labeled image embeddings, kept weak-view embeddings and the sampled pixel anchors (all detached)."""
    if "image" in ctx.banks:  # label −1 = not kept: the bank skips it (no boolean indexing, no host sync)
        feats = torch.cat([out_l["image_embed"].detach(), out_w["image_embed"].detach()])
        ctx.banks["image"].enqueue(feats, torch.cat([label, kept_or_ignore(pl["cls_pseudo"], pl["cls_keep"])]))
    if "pixel" in ctx.banks:
        sampled = ctx.pixel_loss.last_anchors
        if sampled is not None:
            ctx.banks["pixel"].enqueue(*sampled)


def forward_views(model: nn.Module, x: Tensor, weak: Tensor, strong: Tensor, teacher: str,
                  ema: Optional[nn.Module] = None) -> Tuple[Dict[str, Tensor], Dict[str, Tensor], Dict[str, Tensor]]:
    """``(out_labeled, out_weak (detached), out_strong)`` under the teacher mode of Code/engine/teacher.py."""
    n, u = x.shape[0], weak.shape[0]
    if teacher == "joint":
        out = _float(model(torch.cat([x, weak, strong])))
        return ({k: v[:n] for k, v in out.items()}, {k: v[n:n + u].detach() for k, v in out.items()},
                {k: v[n + u:] for k, v in out.items()})
    if teacher == "ema":
        if ema is None:
            raise ValueError("ssl.teacher 'ema' needs the EMA teacher module")
        out_w = _float(ema(weak))
    else:
        was_training = model.training
        model.train(teacher == "train")
        with torch.no_grad():
            out_w = _float(model(weak))
        model.train(was_training)
    out = _float(model(torch.cat([x, strong])))
    return {k: v[:n] for k, v in out.items()}, {k: v.detach() for k, v in out_w.items()}, {k: v[n:] for k, v in out.items()}


def consistency_term(out_s: Dict[str, Tensor], mode: str) -> Tensor:
    """Inter-task consistency on the strong view: ``cosine`` = 1 − cos(g_seg, g_cls) with both heads free (the
    reference); ``stopgrad`` = 1 − cos(g_seg, sg(g_cls)): the segmentation side must predict the classifier's
    lesion feature, which cannot move to meet it."""
    target = out_s["consist_cls"].detach() if mode == "stopgrad" else out_s["consist_cls"]
    return inter_task_consistency(out_s["consist_seg"], target)


def train_step(model: nn.Module, labeled, unlabeled, step: int, ctx: StepContext, teacher: Optional[nn.Module] = None
               ) -> Tuple[Tensor, Dict[str, Tensor], Optional[Dict[str, Tensor]]]:
    """One iteration: ``(total loss, detached terms and stats, tensors for TensorBoard images and diagnostics)``.

    ``teacher``: the EMA teacher module when ``ssl.teacher`` is ``ema``."""
    x, mask, label = labeled
    if not ctx.switches.unlabeled:
        out_l = _float(model(x))
        terms = supervised_terms(out_l, mask, label)
        vis = {"input": x, "gt": mask, "pred_logits": out_l["seg_logits"], "saliency": out_l.get("saliency")}
        return combine_terms(terms, ctx.config, step), {k: v.detach() for k, v in terms.items()}, vis
    weak, strong = unlabeled
    out_l, out_w, out_s = forward_views(model, x, weak, strong, ctx.switches.teacher, teacher)
    pl, stats = pseudo_labels(out_w, ctx, step)
    terms = supervised_terms(out_l, mask, label)
    terms["seg_unsup"] = seg_unsup_loss(out_s["seg_logits"], pl, ctx.config["ssl"]["seg_unsup_loss"])
    terms["cls_unsup"] = masked_cross_entropy(out_s["cls_logits"], pl["cls_pseudo"], pl["cls_keep"])
    warm = step >= schedule_steps(ctx.config, "contrast_warmup")
    if warm:
        terms.update(contrast_terms(out_l, out_w, out_s, mask, pl, ctx))
    if ctx.switches.consistency:
        terms["consistency"] = consistency_term(out_s, ctx.switches.consistency_mode)
    total = combine_terms(terms, ctx.config, step)
    if warm:
        update_banks(out_l, out_w, label, pl, ctx)
    logs = {k: v.detach() for k, v in terms.items()}
    logs.update({k: v.detach() for k, v in stats.items()})
    vis = {"input": weak, "pseudo": pl["seg_pseudo"], "keep": pl["seg_keep"], "seg_probs": pl["seg_probs"],
           "saliency": out_s.get("saliency"), "gt": mask, "pred_logits": out_l["seg_logits"],
           "cls_pseudo": pl["cls_pseudo"], "cls_keep": pl["cls_keep"], "cls_probs": pl["cls_probs"]}
    return total, logs, vis
