"""``mean_teacher`` (Tarvainen & Valpola, NeurIPS 2017): the student is pulled towards the class probabilities
of a teacher whose weights are an exponential moving average of its own.

Teacher θ' (an EMA copy of the student θ, eval mode, :class:`Code.engine.teacher.EMATeacher`) on the weak view,
student on the strong view of the same unlabeled images (the two differently perturbed inputs of the paper).
With q = softmax(teacher logits), p = softmax(student logits), each a mean over every element (images × classes
for classification, images × classes × pixels for segmentation)::

    cls_mse = mean (p_cls − q_cls)²            seg_mse = mean (p_seg − q_seg)²
    L = seg.w · seg_sup + cls.w · cls_sup + λ(t) · (seg_mse + cls_mse)
    λ(t) = mean_teacher.consistency · ρ(t, mean_teacher.rampup · train.iters),   ρ(t, T) = exp(−5(1 − t/T)²)

After each optimiser step θ' ← d θ' + (1 − d) θ with d = mean_teacher.ema_decay_rampup during the ramp-up and
mean_teacher.ema_decay after it (capped early on by (1 + t)/(10 + t), as every EMA teacher here). Gradients reach
the student only (q is a constant target). ``ssl.teacher`` is not read: the EMA teacher is the method. State:
``teacher``.
"""
from __future__ import annotations

from typing import Any, Dict, Optional

import torch
import torch.nn.functional as F
from torch import nn

from Code.engine.teacher import EMATeacher
from Code.errors import UserError
from Code.methods.base import Method, StepResult, register
from Code.methods.terms import combine_terms, forward_views, supervised_terms
from Code.methods.thresholds import sigmoid_rampup

Tensor = torch.Tensor


def softmax_mse(student_logits: Tensor, teacher_logits: Tensor) -> Tensor:
    """mean over all elements of (softmax(student) − softmax(teacher))², softmax over dim 1; teacher detached."""
    return F.mse_loss(student_logits.softmax(1), teacher_logits.detach().softmax(1))


@register("mean_teacher")
class MeanTeacher(Method):
    @classmethod
    def teacher_of(cls, config: Dict[str, Any]) -> Optional[str]:
        return "ema"

    def build(self, config: Dict[str, Any], device: torch.device, student: Optional[nn.Module] = None,
              labeled_prior: Optional[Tensor] = None) -> None:
        super().build(config, device, student, labeled_prior)
        self.settings = config["mean_teacher"]
        self.teacher = EMATeacher(student, self.settings["ema_decay"]) if student is not None else None

    def rampup_steps(self) -> float:
        return float(self.settings["rampup"]) * float(self.config["train"]["iters"])

    def weight(self, step: int) -> float:
        """λ(t) of the module docstring (a host float)."""
        return float(self.settings["consistency"]) * sigmoid_rampup(step, self.rampup_steps())

    def step(self, model: nn.Module, labeled, unlabeled, step: int) -> StepResult:
        """``labeled``: (x, mask, label); ``unlabeled``: (weak, strong), the teacher's and the student's inputs."""
        x, mask, label = labeled
        weak, strong = unlabeled
        out_l, out_t, out_s = forward_views(model, x, weak, strong, "ema", self.teacher)
        terms = supervised_terms(out_l, mask, label)
        terms["seg_mse"] = softmax_mse(out_s["seg_logits"], out_t["seg_logits"])
        terms["cls_mse"] = softmax_mse(out_s["cls_logits"], out_t["cls_logits"])
        total = combine_terms(terms, self.config, step) + self.weight(step) * (terms["seg_mse"] + terms["cls_mse"])
        logs = {k: v.detach() for k, v in terms.items()}
        seg_probs, cls_probs = out_t["seg_logits"].softmax(1), out_t["cls_logits"].softmax(1)
        seg_pseudo, cls_pseudo = seg_probs.argmax(1), cls_probs.argmax(1)
        vis = {"input": weak, "pseudo": seg_pseudo, "keep": torch.ones_like(seg_pseudo, dtype=torch.bool),
               "seg_probs": seg_probs, "saliency": out_s.get("saliency"), "gt": mask,
               "pred_logits": out_l["seg_logits"], "cls_pseudo": cls_pseudo,
               "cls_keep": torch.ones_like(cls_pseudo, dtype=torch.bool), "cls_probs": cls_probs}
        return total, logs, vis  # vis: the teacher's argmax as "pseudo-labels", every one used (soft targets)

    def after_step(self, student: nn.Module, step: int) -> None:
        """θ' ← d θ' + (1 − d) θ, with the ramp-up decay before ``rampup · iters`` and the final one after."""
        after = step >= self.rampup_steps()
        self.teacher.decay = float(self.settings["ema_decay" if after else "ema_decay_rampup"])
        self.teacher.update(student, step)

    def state_dict(self) -> Dict[str, Any]:
        return {"teacher": self.teacher.state_dict()}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        if state.get("teacher") is None:
            raise UserError("the checkpoint has no EMA teacher (it was not saved by a mean_teacher run)")
        self.teacher.load_state_dict(state["teacher"])
