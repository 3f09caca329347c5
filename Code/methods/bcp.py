"""``bcp`` (Bai, Chen, Li, Shen & Wang, "Bidirectional Copy-Paste for Semi-Supervised Medical Image Segmentation",
CVPR 2023): a mean teacher whose student learns from labeled and unlabeled images pasted into each other, so that
both kinds share one distribution of contexts.

**Mask.** M ∈ {0, 1}^{H×W} is 1 everywhere except one zero rectangle of ⌊βH⌋ × ⌊βW⌋ pixels (β = ``bcp.mask_ratio``,
the paper's 2/3) at a uniformly random position; one mask per pair, drawn from torch's global generator (saved with
the run, so a resumed run draws the same masks).

**Pairs.** With B_l labeled images (X_l, Y_l) and B_u unlabeled ones (the weak view X_u), pair k = 0 … P − 1,
P = max(B_l, B_u), takes labeled image k mod B_l and unlabeled image k mod B_u (the paper's equations draw the
images of X_in and X_out independently; here one labeled and one unlabeled image meet in both directions, so the
two mixed images of a pair together hold both images once). The EMA teacher labels u: Ŷ_u = argmax teacher(X_u).
``ssl.teacher`` is not read: the EMA teacher is the method. The strong view is not used (BCP has no strong
augmentation; the pasted pixels must stay aligned with the teacher's labels). Per pair, ⊙ per pixel::

    X_in  = X_l ⊙ M + X_u ⊙ (1 − M)        Y_in  = Y_l ⊙ M + Ŷ_u ⊙ (1 − M)     (unlabeled centre pasted inward)
    X_out = X_u ⊙ M + X_l ⊙ (1 − M)        Y_out = Ŷ_u ⊙ M + Y_l ⊙ (1 − M)     (labeled centre pasted outward)

**Loss.** With Q the student's logits on a mixed image and, for a region r ∈ {0, 1}^{H×W},
L(Q, Y, r) = ½ (CE_r + Dice_r), CE_r = Σ r·CE(Q, Y) / Σ r, Dice_r = 1 − soft Dice of the lesion class over the
pixels of r (both summed over the batch; the paper's (CE + Dice)/2 with each part normalised over its own pixels)::

    bcp_in  = L(Q_in, Y_in, M)       + α · L(Q_in, Y_in, 1 − M)        ground truth weighs 1,
    bcp_out = L(Q_out, Y_out, 1 − M) + α · L(Q_out, Y_out, M)          pseudo-labels α (``bcp.alpha``, 0.5)
    L = seg.w · (bcp_in + bcp_out) + cls.w · cls_sup

**Classification.** BCP is a segmentation method: the classification head learns from the labeled images only,
cls_sup = CE(c(X_l), y_cls), the plain labeled batch riding in the student's forward with the mixed images (no
pseudo-label term on the cls head: a mixed image has no single class).

**Pre-training** (the paper's first stage), t < T_pre = ``bcp.pretrain_iters`` · train.iters: copy-paste among the
labeled images only, X_mix = X_l ⊙ M + X_l' ⊙ (1 − M), Y_mix likewise, l' the labeled batch rolled by one, both
parts weighted 1: bcp_pre = L(Q_mix, Y_mix, M) + L(Q_mix, Y_mix, 1 − M), L = seg.w · bcp_pre + cls.w · cls_sup.
The teacher is copied from the student after every pre-training step, so self-training starts with teacher =
student = the pre-trained network, as in the paper. After it, θ' ← d θ' + (1 − d) θ with d = ``bcp.ema_decay``
(capped early on by (1 + t)/(10 + t), as every EMA teacher here). State: ``teacher``.
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from Code.engine.teacher import EMATeacher
from Code.errors import UserError
from Code.methods.base import Method, StepResult, register
from Code.methods.mixing import (bidirectional_mix, mixed_loss, pair_indices, paste, rectangle_masks,  # noqa: F401
                                 region_loss, zero_centred_masks)
from Code.methods.terms import as_float

Tensor = torch.Tensor


@register("bcp")
class BCP(Method):
    @classmethod
    def teacher_of(cls, config: Dict[str, Any]) -> Optional[str]:
        return "ema"

    def build(self, config: Dict[str, Any], device: torch.device, student: Optional[nn.Module] = None,
              labeled_prior: Optional[Tensor] = None) -> None:
        super().build(config, device, student, labeled_prior)
        self.settings = config["bcp"]
        self.teacher = EMATeacher(student, self.settings["ema_decay"]) if student is not None else None

    def pretrain_steps(self) -> int:
        """T_pre: the number of pre-training iterations (labeled-only copy-paste)."""
        return int(round(float(self.settings["pretrain_iters"]) * int(self.config["train"]["iters"])))

    def masks(self, n: int, like: Tensor) -> Tensor:
        """``n`` copy-paste masks for images like ``like`` (N×C×H×W)."""
        return zero_centred_masks(n, tuple(like.shape[-2:]), float(self.settings["mask_ratio"]), like.device)

    def _total(self, terms: Dict[str, Tensor], seg_names: Tuple[str, ...]) -> Tensor:
        w = self.config["loss"]
        return w["seg"] * sum(terms[k] for k in seg_names) + w["cls"] * terms["cls_sup"]

    def step(self, model: nn.Module, labeled, unlabeled, step: int) -> StepResult:
        """``labeled``: (x, mask, label); ``unlabeled``: (weak, strong), the weak view mixed (strong unused)."""
        if step < self.pretrain_steps():
            return self._pretrain_step(model, labeled, unlabeled)
        x, mask, label = labeled
        weak = unlabeled[0]
        out_t = as_float(self.teacher(weak))
        seg_probs = out_t["seg_logits"].softmax(1)
        pseudo = seg_probs.argmax(1)
        li, ui = pair_indices(x.shape[0], weak.shape[0], x.device)
        m = self.masks(li.shape[0], x)
        mix = bidirectional_mix(x[li], mask[li], weak[ui], pseudo[ui], m)
        n, p = x.shape[0], li.shape[0]
        out = as_float(model(torch.cat([x, mix["x_in"], mix["x_out"]])))
        alpha = float(self.settings["alpha"])
        terms = {"cls_sup": F.cross_entropy(out["cls_logits"][:n], label),
                 "bcp_in": mixed_loss(out["seg_logits"][n:n + p], mix["y_in"], m, 1.0, alpha),
                 "bcp_out": mixed_loss(out["seg_logits"][n + p:], mix["y_out"], m, alpha, 1.0)}
        total = self._total(terms, ("bcp_in", "bcp_out"))
        cls_pseudo = out_t["cls_logits"].argmax(1)
        vis = {"input": weak, "pseudo": pseudo, "keep": torch.ones_like(pseudo, dtype=torch.bool),
               "seg_probs": seg_probs, "gt": mask, "pred_logits": out["seg_logits"][:n],
               "saliency": out["saliency"][:n] if "saliency" in out else None, "cls_pseudo": cls_pseudo,
               "cls_keep": torch.zeros_like(cls_pseudo, dtype=torch.bool), "cls_probs": out_t["cls_logits"].softmax(1)}
        return total, {k: v.detach() for k, v in terms.items()}, vis  # cls_keep: no cls pseudo-label is used

    def _pretrain_step(self, model: nn.Module, labeled, unlabeled) -> StepResult:
        """The labeled-only copy-paste stage: X_mix = X_l ⊙ M + roll(X_l) ⊙ (1 − M), both parts weighted 1."""
        x, mask, label = labeled
        m = self.masks(x.shape[0], x)
        x_mix, y_mix = paste(x, x.roll(1, 0), m), paste(mask, mask.roll(1, 0), m)
        n = x.shape[0]
        out = as_float(model(torch.cat([x, x_mix])))
        terms = {"cls_sup": F.cross_entropy(out["cls_logits"][:n], label),
                 "bcp_pre": mixed_loss(out["seg_logits"][n:], y_mix, m, 1.0, 1.0)}
        total = self._total(terms, ("bcp_pre",))
        weak = unlabeled[0] if unlabeled is not None else x
        nothing = torch.zeros(weak.shape[0], *weak.shape[-2:], dtype=torch.long, device=weak.device)
        no_cls = torch.zeros(weak.shape[0], dtype=torch.long, device=weak.device)
        vis = {"input": x_mix, "gt": y_mix, "pred_logits": out["seg_logits"][n:], "pseudo": nothing,
               "keep": nothing.bool(), "cls_pseudo": no_cls, "cls_keep": no_cls.bool(),
               "saliency": out["saliency"][n:] if "saliency" in out else None}
        return total, {k: v.detach() for k, v in terms.items()}, vis  # no pseudo-label is used before self-training

    def after_step(self, student: nn.Module, step: int) -> None:
        """During pre-training the teacher becomes a copy of the student; after it, the EMA update."""
        if step < self.pretrain_steps():
            self.teacher.model.load_state_dict(student.state_dict())
        else:
            self.teacher.update(student, step)

    def state_dict(self) -> Dict[str, Any]:
        return {"teacher": self.teacher.state_dict()}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        if state.get("teacher") is None:
            raise UserError("the checkpoint has no EMA teacher (it was not saved by a bcp run)")
        self.teacher.load_state_dict(state["teacher"])
