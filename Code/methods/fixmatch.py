"""``fixmatch`` (Sohn et al., NeurIPS 2020) for both heads: the weak view's confident predictions are the strong
view's targets.

With p = softmax of the weak view (per pixel and per image), ŷ = argmax p and keep = p_ŷ > τ
(:func:`Code.methods.thresholds.dual_threshold_mask` with ``combine="confidence"``)::

    seg_unsup = CE (or Dice) of the strong-view segmentation against ŷ over the kept pixels
    cls_unsup = CE of the strong-view classification against ŷ over the kept images
    L = supervised terms + ρ_u · (seg.w · seg_unsup.w · seg_unsup + cls.w · cls_unsup.w · cls_unsup)

By default as the paper describes it (the ``fixmatch`` block of ``configs/base.yaml``): the student labels its own
weak view in the same forward as the labeled and strong views (``fixmatch.teacher: joint``), τ = 0.95, per-pixel
CE, and no ramp-up of the unsupervised weight (ρ_u = 1). ``fixmatch.teacher: ema`` (with
``fixmatch.unsup_rampup: 0.1``) is the variant that shares Hermes' EMA teacher and ramp — the FixMatch rows of the
earlier BUSI tables — and is reported as a row of its own. With ``ssl.prior_aware`` or ``ssl.class_ratio: pool``
(shared with Hermes, beyond the paper) the estimate π of the unlabeled pool's class prior
(:class:`Code.methods.thresholds.PoolPrior`: EM over a window of the weak view's posteriors, ``ssl.prior_window``,
bounded by ``ssl.prior_max_shift``) re-weights the weak view's class probabilities from the labeled prior
to π, or gives r_c of the class-adaptive threshold. ``ssl.class_ratio: relative`` (beyond the paper) measures r_c
against the labeled class shares (:func:`Code.methods.thresholds.relative_ratio`): pixels against the lesion share
of the labeled masks seen so far (:class:`Code.methods.thresholds.LabeledShare`), images against the labeled list's
prior (the pool prior π when ``ssl.prior_aware`` has re-weighted them to it). State: ``teacher`` (EMA weights, when
used), ``pool_prior`` and ``seg_share``.

:class:`Code.methods.hermes.Hermes` builds on this class and reads the same four settings from ``ssl`` instead
(:meth:`FixMatch.own_settings`).
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

import torch
from torch import nn

from Code.engine.teacher import EMATeacher
from Code.errors import UserError
from Code.losses import masked_cross_entropy
from Code.methods.base import Method, StepResult, register
from Code.methods.terms import Outputs, combine_terms, forward_views, seg_unsup_loss, supervised_terms
from Code.methods.thresholds import LabeledShare, PoolPrior, adjust_to_prior, dual_threshold_mask

Tensor = torch.Tensor


@register("fixmatch")
class FixMatch(Method):
    combine = "confidence"  # the single fixed threshold τ

    @classmethod
    def own_settings(cls, config: Dict[str, Any]) -> Dict[str, Any]:
        """Who labels the weak view, τ, the segmentation pseudo-label loss and the ramp of ρ_u:
        ``{teacher, threshold, seg_unsup_loss, unsup_rampup}`` from the ``fixmatch`` block."""
        return dict(config["fixmatch"])

    @classmethod
    def teacher_of(cls, config: Dict[str, Any]) -> Optional[str]:
        return cls.own_settings(config)["teacher"]

    def build(self, config: Dict[str, Any], device: torch.device, student: Optional[nn.Module] = None,
              labeled_prior: Optional[Tensor] = None) -> None:
        super().build(config, device, student, labeled_prior)
        ssl, own = config["ssl"], self.own_settings(config)
        self.settings = own
        self.teacher_mode, self.prior_aware = own["teacher"], ssl["prior_aware"]
        self.pool_ratio = ssl["class_ratio"] == "pool"
        # ssl.class_ratio: relative — r of the class-adaptive threshold against the labeled shares (pixels: counted)
        self.seg_share = LabeledShare(2).to(device) if ssl["class_ratio"] == "relative" else None
        # the weighted total reads ρ_u's ramp from ssl.unsup_rampup: give it this method's own
        self.loss_config = dict(config, ssl=dict(ssl, unsup_rampup=own["unsup_rampup"]))
        self.teacher = (EMATeacher(student, ssl["ema_decay"])
                        if self.teacher_mode == "ema" and student is not None else None)
        self.pool_prior = (PoolPrior(2, ssl["prior_momentum"], ssl["prior_window"], ssl["prior_max_shift"]).to(device)
                           if self.prior_aware or self.pool_ratio else None)
        prior = torch.full((2,), 0.5) if labeled_prior is None else labeled_prior.float()
        self.labeled_prior = prior.to(device)

    # ------------------------------------------------------------------------------------------ pseudo-labels
    def pseudo_labels(self, out_weak: Outputs, step: int) -> Tuple[Dict[str, Tensor], Dict[str, Tensor]]:
        """Thresholded pseudo-labels of the weak view for pixels and images, and their statistics (logged)."""
        ssl, total = self.config["ssl"], self.config["train"]["iters"]
        tau = self.settings["threshold"]  # τ_lo only matters to Hermes' dual threshold (then τ_lo ≤ τ_hi is checked)
        kw = dict(tau_hi=tau, tau_lo=min(ssl["tau_lo"], tau), combine=self.combine)
        seg_probs = out_weak["seg_logits"].detach().float().softmax(1)
        cls_probs = out_weak["cls_logits"].detach().float().softmax(1)
        ratio, stats, cls_expected = None, {}, self.labeled_prior
        if self.pool_prior is not None:
            prior = self.pool_prior.update(cls_probs, self.labeled_prior)
            stats["cls_pool_prior_1"] = prior[1].clone()
            if self.prior_aware:
                cls_probs, cls_expected = adjust_to_prior(cls_probs, prior, self.labeled_prior), prior
            ratio = prior if self.pool_ratio else None
        seg_rel = cls_rel = None
        if self.seg_share is not None:  # the class shares the (possibly re-weighted) probabilities should show
            seg_rel, cls_rel = self.seg_share.share(), cls_expected
            stats["seg_labeled_share_1"] = seg_rel[1].clone()
        seg_pseudo, seg_keep, seg_stats = dual_threshold_mask(seg_probs, step, total, relative_to=seg_rel, **kw)
        cls_pseudo, cls_keep, cls_stats = dual_threshold_mask(cls_probs, step, total, class_ratio=ratio,
                                                              relative_to=cls_rel, **kw)
        stats.update({f"seg_{k}": v for k, v in seg_stats.items()})
        stats.update({f"cls_{k}": v for k, v in cls_stats.items()})
        labels = {"seg_pseudo": seg_pseudo, "seg_keep": seg_keep, "cls_pseudo": cls_pseudo, "cls_keep": cls_keep,
                  "seg_probs": seg_probs, "cls_probs": cls_probs}
        return labels, stats

    # ------------------------------------------------------------------------------------------ hooks for Hermes
    def extra_terms(self, out_l: Outputs, out_w: Outputs, out_s: Outputs, mask: Tensor, pl: Dict[str, Tensor],
                    step: int) -> Dict[str, Tensor]:
        """Terms beyond FixMatch's (none here)."""
        return {}

    def stream_terms(self, model: nn.Module, x: Tensor, mask: Tensor, weak: Tensor, strong: Tensor,
                     pl: Dict[str, Tensor]) -> Dict[str, Tensor]:
        """Terms of extra student forwards that need this step's pseudo-labels (none here)."""
        return {}

    def total(self, terms: Dict[str, Tensor], step: int) -> Tensor:
        """The weighted total of the step's terms (:func:`Code.methods.terms.combine_terms`)."""
        return combine_terms(terms, self.loss_config, step)

    def after_terms(self, out_l: Outputs, out_w: Outputs, label: Tensor, pl: Dict[str, Tensor], step: int) -> None:
        """State updates once the total is formed (none here)."""

    def extra_logs(self) -> Dict[str, Tensor]:
        """Logged values of this step beyond the terms and the pseudo-label statistics (none here)."""
        return {}

    # ------------------------------------------------------------------------------------------ the step
    def step(self, model: nn.Module, labeled, unlabeled, step: int) -> StepResult:
        """``labeled``: (x, mask, label); ``unlabeled``: (weak B×C×H×W, strong B×C×H×W)."""
        x, mask, label = labeled
        weak, strong = unlabeled
        out_l, out_w, out_s = forward_views(model, x, weak, strong, self.teacher_mode, self.teacher)
        if self.seg_share is not None:
            self.seg_share.update(mask)
        pl, stats = self.pseudo_labels(out_w, step)
        terms = supervised_terms(out_l, mask, label)
        terms["seg_unsup"] = seg_unsup_loss(out_s["seg_logits"], pl, self.settings["seg_unsup_loss"])
        terms["cls_unsup"] = masked_cross_entropy(out_s["cls_logits"], pl["cls_pseudo"], pl["cls_keep"])
        terms.update(self.extra_terms(out_l, out_w, out_s, mask, pl, step))
        terms.update(self.stream_terms(model, x, mask, weak, strong, pl))
        total = self.total(terms, step)
        self.after_terms(out_l, out_w, label, pl, step)
        logs = {k: v.detach() for k, v in terms.items()}
        logs.update({k: v.detach() for k, v in stats.items()})
        logs.update(self.extra_logs())
        vis = {"input": weak, "pseudo": pl["seg_pseudo"], "keep": pl["seg_keep"], "seg_probs": pl["seg_probs"],
               "saliency": out_s.get("saliency"), "gt": mask, "pred_logits": out_l["seg_logits"],
               "cls_pseudo": pl["cls_pseudo"], "cls_keep": pl["cls_keep"], "cls_probs": pl["cls_probs"]}
        return total, logs, vis

    def after_step(self, student: nn.Module, step: int) -> None:
        """Move the EMA teacher towards the updated student (teacher ``ema``)."""
        if self.teacher is not None:
            self.teacher.update(student, step)

    # ------------------------------------------------------------------------------------------ state
    def state_dict(self) -> Dict[str, Any]:
        state: Dict[str, Any] = {}
        if self.teacher is not None:
            state["teacher"] = self.teacher.state_dict()
        if self.pool_prior is not None:
            state["pool_prior"] = self.pool_prior.state_dict()
        if self.seg_share is not None:
            state["seg_share"] = self.seg_share.state_dict()
        return state

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """The teacher must be there when this run has one; a missing pool prior (a run saved before it was kept)
        starts afresh."""
        if self.teacher is not None:
            if state.get("teacher") is None:
                raise UserError("the checkpoint has no EMA teacher (it was saved with another ssl.teacher)")
            self.teacher.load_state_dict(state["teacher"])
        if self.pool_prior is not None and state.get("pool_prior") is not None:
            self.pool_prior.load_state_dict(state["pool_prior"])
        if self.seg_share is not None:
            if state.get("seg_share") is None:
                raise UserError("the checkpoint has no labeled pixel shares (it was saved without "
                                "ssl.class_ratio: relative)")
            self.seg_share.load_state_dict(state["seg_share"])
