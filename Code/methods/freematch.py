"""``freematch`` (Wang et al., "FreeMatch: Self-adaptive Thresholding for Semi-supervised Learning", ICLR 2023) on
the image-level (benign/malignant) head; the segmentation head is trained on the labeled images only.

With q_b = softmax of the classification logits on the weak view of unlabeled image b (labeled, by default, by the
student itself in the same forward as the strong view: ``freematch.teacher: joint``, the published form),
Q_b = softmax on its strong view, q̂_b = argmax q_b, Q̂_b = argmax Q_b, and the self-adaptive thresholds τ_t(c) of
:mod:`Code.methods.thresholds.self_adaptive` (updated with this batch first; keep_b ⇔ max q_b > τ_t(q̂_b))::

    L_u = 1/B Σ_b keep_b · CE(Q_b, q̂_b)                                     (Eq. 7, w_u = freematch.unsup_weight)
    p̄   = 1/B Σ_b keep_b · Q_b            h̄(c) = 1/B Σ_b keep_b · 1[Q̂_b = c]
    L_f = −H(SumNorm(p̃_t / h_t), SumNorm(p̄ / h̄)) = Σ_c a(c) · log b(c)     (Eq. 11, w_f = freematch.fairness_weight)
          a = SumNorm(p̃_t / h_t) (running state, a constant),  b = SumNorm(p̄ / h̄),  SumNorm(v) = v / Σ_c v(c)
    L = seg.w · seg_sup + cls.w · (cls_sup + w_u · L_u + w_f · L_f)

The gradient reaches the strong view only (q_b, q̂_b, h̄ and the thresholds are constants); ``ssl.unsup_rampup``
and ``loss.cls_unsup`` are not read (the paper has neither a ramp nor a separate scale: L = L_s + w_u L_u + w_f L_f;
``loss.cls`` scales the whole classification objective, so the ratios to the supervised term are the paper's).
Where h̄(c) = 0 (no kept strong prediction of class c) p̄(c)/h̄(c) is taken as 0 and class c leaves the sum (the
gradient of the 1/0 := 0 convention, with a finite value; likewise p̃_t(c)/h_t(c) := 0 where h_t(c) = 0, which
only λ = 0 can reach); with no image kept, L_u = L_f = 0.

Segmentation: FreeMatch is a classification method (the issue lists it for classification). Its thresholds are
statistics of one prediction per image; per pixel they would be dominated by the background and define a new
method, not the paper's, so the segmentation head gets the supervised term only (``seg_unsup`` is not computed;
the diagnostics see the weak view's pixel argmax with nothing kept). State: ``thresholds`` (τ_t, p̃_t, h_t) and,
with ``freematch.teacher: ema``, ``teacher``.
"""
from __future__ import annotations

from typing import Any, Dict, Optional

import torch
from torch import nn

from Code.engine.teacher import EMATeacher
from Code.errors import UserError
from Code.losses import masked_cross_entropy
from Code.methods.base import Method, StepResult, register
from Code.methods.terms import combine_terms, forward_views, supervised_terms
from Code.methods.thresholds.self_adaptive import SelfAdaptiveThreshold

Tensor = torch.Tensor


def fairness_loss(strong_logits: Tensor, keep: Tensor, p_tilde: Tensor, hist: Tensor) -> Tensor:
    """L_f of the module docstring: ``strong_logits`` B×C (the gradient flows through p̄), ``keep`` B bool,
    ``p_tilde`` and ``hist`` the running p̃_t and h_t (C)."""
    probs = strong_logits.float().softmax(1)
    kept = keep.float()[:, None]
    p_bar = (probs * kept).mean(0)
    h_bar = (nn.functional.one_hot(probs.detach().argmax(1), probs.shape[1]).float() * kept).mean(0)
    p_tilde, hist = p_tilde.detach().float(), hist.detach().float()
    target = torch.where(hist > 0, p_tilde / hist.clamp_min(1e-12), torch.zeros_like(p_tilde))
    target = target / target.sum().clamp_min(1e-12)
    present = h_bar > 0
    ratio = torch.where(present, p_bar / h_bar.clamp_min(1e-12), torch.zeros_like(p_bar))
    normed = ratio / ratio.sum().clamp_min(1e-12)
    log_normed = torch.log(torch.where(present, normed, torch.ones_like(normed)).clamp_min(1e-12))
    return (target * log_normed * present.float()).sum()


@register("freematch")
class FreeMatch(Method):
    @classmethod
    def teacher_of(cls, config: Dict[str, Any]) -> Optional[str]:
        return config["freematch"]["teacher"]

    def build(self, config: Dict[str, Any], device: torch.device, student: Optional[nn.Module] = None,
              labeled_prior: Optional[Tensor] = None) -> None:
        super().build(config, device, student, labeled_prior)
        self.settings = config["freematch"]
        self.teacher_mode = self.settings["teacher"]
        self.teacher = None
        if self.teacher_mode == "ema" and student is not None:
            self.teacher = EMATeacher(student, config["ssl"]["ema_decay"])
        self.thresholds = SelfAdaptiveThreshold(2, self.settings["momentum"]).to(device)

    def step(self, model: nn.Module, labeled, unlabeled, step: int) -> StepResult:
        """``labeled``: (x, mask, label); ``unlabeled``: (weak B×C×H×W, strong B×C×H×W)."""
        x, mask, label = labeled
        weak, strong = unlabeled
        out_l, out_w, out_s = forward_views(model, x, weak, strong, self.teacher_mode, self.teacher)
        cls_probs = out_w["cls_logits"].detach().float().softmax(1)
        pseudo, keep, stats = self.thresholds.select(cls_probs)
        terms = supervised_terms(out_l, mask, label)
        total = combine_terms(terms, self.config, step)
        terms["cls_unsup"] = masked_cross_entropy(out_s["cls_logits"], pseudo, keep)
        terms["cls_fairness"] = fairness_loss(out_s["cls_logits"], keep, self.thresholds.p_tilde,
                                              self.thresholds.hist)
        w = self.settings
        total = total + self.config["loss"]["cls"] * (w["unsup_weight"] * terms["cls_unsup"]
                                                      + w["fairness_weight"] * terms["cls_fairness"])
        logs = {k: v.detach() for k, v in terms.items()}
        logs.update({f"cls_{k}": v for k, v in stats.items()})
        seg_probs = out_w["seg_logits"].detach().float().softmax(1)
        seg_pseudo = seg_probs.argmax(1)
        vis = {"input": weak, "pseudo": seg_pseudo, "keep": torch.zeros_like(seg_pseudo, dtype=torch.bool),
               "seg_probs": seg_probs, "saliency": out_s.get("saliency"), "gt": mask,
               "pred_logits": out_l["seg_logits"], "cls_pseudo": pseudo, "cls_keep": keep, "cls_probs": cls_probs}
        return total, logs, vis

    def after_step(self, student: nn.Module, step: int) -> None:
        """Move the EMA teacher (``freematch.teacher: ema`` only)."""
        if self.teacher is not None:
            self.teacher.update(student, step)

    def state_dict(self) -> Dict[str, Any]:
        state: Dict[str, Any] = {"thresholds": self.thresholds.state_dict()}
        if self.teacher is not None:
            state["teacher"] = self.teacher.state_dict()
        return state

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        if state.get("thresholds") is None:
            raise UserError("the checkpoint has no FreeMatch thresholds (it was not saved by a freematch run)")
        self.thresholds.load_state_dict(state["thresholds"])
        if self.teacher is not None:
            if state.get("teacher") is None:
                raise UserError("the checkpoint has no EMA teacher (it was saved with another freematch.teacher)")
            self.teacher.load_state_dict(state["teacher"])
