"""``unimatch`` (Yang, Qi, Feng, Zhang, Shi, "Revisiting Weak-to-Strong Consistency in Semi-Supervised Semantic
Segmentation", CVPR 2023): FixMatch with a feature-perturbation stream and two strong views, for both heads.

The student labels its own weak view u_w (no EMA teacher; ``ssl.teacher`` is not read): one forward of the batch
[x; u_w; u_w; u_s1; u_s2] (labeled, weak, weak again for the perturbed stream, the two strong views), in which
the encoder features f1…f5 of the second weak copy go through channel dropout (``Dropout2d``, p =
``unimatch.fp_dropout``) before the decoder and the classification branch (:class:`FeatureDropout`; f0 is the
input image, which neither head reads). With p = softmax of the clean weak rows (detached), per pixel and per
image, ŷ = argmax p and keep = max p ≥ τ (``unimatch.threshold``, 0.95)::

    L_h(z)  = mean over all pixels (seg) or images (cls) of keep · CE(z, ŷ)      (unkept ones count as 0)
    U_task  = w_s · (L_h(s1) + L_h(s2)) + w_fp · L_h(fp)          w_s = 0.25, w_fp = 0.5 (the paper's μ/2 and λ)
    L = seg.w · (seg_sup + U_seg) + cls.w · (cls_sup + U_cls)

with seg_sup, cls_sup the engine's supervised terms (CE + Dice, CE) and seg.w, cls.w the engine's task weights
(``loss.seg``, ``loss.cls``). The paper's segmentation-only method is applied unchanged to the image-level head
(the same three streams against the image pseudo-labels). Not ramped (the paper has no ramp-up). Departures, said
here: the paper's overall factor 1/2 on (L_s + L_u) is left out (a learning-rate factor; the engine's optimisers
are shared by all methods); its strong views also use CutMix with a second unlabeled batch, while here each strong
view is an independent draw of the engine's photometric strong augmentation of the same weak view (same
pseudo-labels, no mixing; the data stream gives two because ``strong_views = 2``). The weak image runs through
the encoder twice (once clean, once to be perturbed) where the paper perturbs the clean pass's features: equal
outputs, the weak rows only weigh twice in the encoder's BatchNorm batch. No state beyond the network.
"""
from __future__ import annotations

from typing import Any, Dict, Optional

import torch
from torch import nn

from Code.engine.distributed import unwrap
from Code.losses import masked_cross_entropy
from Code.methods.base import Method, StepResult, register
from Code.methods.feature_dropout import FeatureDropout
from Code.methods.terms import as_float, supervised_terms

Tensor = torch.Tensor
STREAMS = ("s1", "s2", "fp")


@register("unimatch")
class UniMatch(Method):
    @classmethod
    def teacher_of(cls, config: Dict[str, Any]) -> Optional[str]:
        return "joint"

    strong_views = 2

    def build(self, config: Dict[str, Any], device: torch.device, student: Optional[nn.Module] = None,
              labeled_prior: Optional[Tensor] = None) -> None:
        super().build(config, device, student, labeled_prior)
        self.settings = config["unimatch"]
        self.dropout = FeatureDropout(float(self.settings["fp_dropout"]))

    def forward_streams(self, model: nn.Module, x: Tensor, weak: Tensor, strong1: Tensor,
                        strong2: Tensor) -> Dict[str, Dict[str, Tensor]]:
        """Outputs (float32) of the labeled ``l``, weak ``w`` (detached), ``fp``, ``s1`` and ``s2`` rows of one
        forward of [x; weak; weak; strong1; strong2], the ``fp`` rows' encoder features dropped out."""
        n, u = x.shape[0], weak.shape[0]
        self.dropout.attach(unwrap(model))
        self.dropout.rows = slice(n + u, n + 2 * u)
        try:
            out = as_float(model(torch.cat([x, weak, weak, strong1, strong2])))
        finally:
            self.dropout.rows = None
        bounds = {"l": (0, n), "w": (n, n + u), "fp": (n + u, n + 2 * u), "s1": (n + 2 * u, n + 3 * u),
                  "s2": (n + 3 * u, n + 4 * u)}
        views = {name: {k: v[a:b] for k, v in out.items()} for name, (a, b) in bounds.items()}
        views["w"] = {k: v.detach() for k, v in views["w"].items()}
        return views

    def pseudo_labels(self, out_w: Dict[str, Tensor]) -> Dict[str, Tensor]:
        """ŷ = argmax p and keep = max p ≥ τ for pixels (``seg_*``) and images (``cls_*``), p the weak softmax."""
        labels = {}
        for task in ("seg", "cls"):
            probs = out_w[f"{task}_logits"].softmax(1)
            confidence, pseudo = probs.max(1)
            labels.update({f"{task}_probs": probs, f"{task}_pseudo": pseudo,
                           f"{task}_keep": confidence >= float(self.settings["threshold"])})
        return labels

    def unsup_terms(self, views: Dict[str, Dict[str, Tensor]], pl: Dict[str, Tensor]) -> Dict[str, Tensor]:
        """``{task}_{stream}``: the kept-masked CE of each stream (s1, s2, fp) against the weak pseudo-labels."""
        return {f"{task}_{stream}": masked_cross_entropy(views[stream][f"{task}_logits"], pl[f"{task}_pseudo"],
                                                         pl[f"{task}_keep"])
                for task in ("seg", "cls") for stream in STREAMS}

    def total(self, terms: Dict[str, Tensor]) -> Tensor:
        """L of the module docstring."""
        w_s, w_fp = float(self.settings["strong_weight"]), float(self.settings["fp_weight"])
        loss = self.config["loss"]
        unsup = {task: w_s * (terms[f"{task}_s1"] + terms[f"{task}_s2"]) + w_fp * terms[f"{task}_fp"]
                 for task in ("seg", "cls")}
        return (loss["seg"] * (terms["seg_sup"] + unsup["seg"])
                + loss["cls"] * (terms["cls_sup"] + unsup["cls"]))

    def step(self, model: nn.Module, labeled, unlabeled, step: int) -> StepResult:
        """``labeled``: (x, mask, label); ``unlabeled``: (weak, strong1, strong2), each B×C×H×W."""
        x, mask, label = labeled
        weak, strong1, strong2 = unlabeled
        views = self.forward_streams(model, x, weak, strong1, strong2)
        pl = self.pseudo_labels(views["w"])
        terms = supervised_terms(views["l"], mask, label)
        terms.update(self.unsup_terms(views, pl))
        total = self.total(terms)
        logs = {k: v.detach() for k, v in terms.items()}
        logs.update({f"{t}_keep_ratio": pl[f"{t}_keep"].float().mean() for t in ("seg", "cls")})
        vis = {"input": weak, "pseudo": pl["seg_pseudo"], "keep": pl["seg_keep"], "seg_probs": pl["seg_probs"],
               "saliency": views["s1"].get("saliency"), "gt": mask, "pred_logits": views["l"]["seg_logits"],
               "cls_pseudo": pl["cls_pseudo"], "cls_keep": pl["cls_keep"], "cls_probs": pl["cls_probs"]}
        return total, logs, vis
