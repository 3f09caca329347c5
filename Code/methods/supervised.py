"""``supervised``: the labeled images only (the lower bound every semi-supervised method must beat).

    L = seg.w · (CE(s, y_seg) + Dice(s, y_seg)) + cls.w · CE(c, y_cls)

with s, c the network's segmentation and classification logits on the labeled batch. No extra state.
"""
from __future__ import annotations

from Code.methods.base import Method, StepResult, register
from Code.methods.terms import as_float, combine_terms, supervised_terms


@register("supervised")
class Supervised(Method):
    uses_unlabeled = False

    def step(self, model, labeled, unlabeled, step: int) -> StepResult:
        """``labeled``: (x B×C×H×W, mask B×H×W, label B); ``unlabeled`` is ignored (None)."""
        x, mask, label = labeled
        out_l = as_float(model(x))
        terms = supervised_terms(out_l, mask, label)
        vis = {"input": x, "gt": mask, "pred_logits": out_l["seg_logits"], "saliency": out_l.get("saliency")}
        return combine_terms(terms, self.config, step), {k: v.detach() for k, v in terms.items()}, vis
