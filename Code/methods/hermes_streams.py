"""Optional extra unlabeled streams for Hermes, beyond the paper (the ``hermes`` block of ``configs/base.yaml``;
both off by default, so that ``--method hermes`` stays the paper's method). Each borrows one idea of a baseline of
issue #23 and feeds it Hermes' dual-threshold pseudo-labels ŷ (kept where ``keep``) of the weak view.

**Copy-paste** (from BCP, :mod:`Code.methods.bcp`; weight w_cp = ``hermes.copy_paste``). Pair k of the
P = max(B_l, B_u) pairs takes labeled image k mod B_l and unlabeled image k mod B_u; the *strong* view S_u is pasted
(it is pixel-aligned with the weak view, so ŷ still applies). M (P×H×W) is 1 outside one random rectangle of
⌊βH⌋ × ⌊βW⌋ pixels (β = ``hermes.copy_paste_ratio``)::

    X_in  = X_l ⊙ M + S_u ⊙ (1 − M)     Y_in  = Y_l ⊙ M + ŷ ⊙ (1 − M)     truth where M, pseudo-label inside
    X_out = S_u ⊙ M + X_l ⊙ (1 − M)     Y_out = ŷ ⊙ M + Y_l ⊙ (1 − M)     pseudo-label outside, truth inside
    copy_paste = L(Q_in, Y_in, M) + α·L(Q_in, Y_in, (1 − M) ∧ keep)
               + L(Q_out, Y_out, 1 − M) + α·L(Q_out, Y_out, M ∧ keep)

with L(Q, Y, r) = ½ (CE over r + lesion Dice over r) (:func:`Code.methods.bcp.region_loss`), α =
``hermes.copy_paste_alpha`` and keep the dual-threshold mask moved with its pixels: unlike BCP, pixels whose
pseudo-label failed the thresholds teach nothing.

**Feature perturbation** (from UniMatch, :mod:`Code.methods.unimatch`; weight w_fp = ``hermes.feature_perturbation``):
the student sees the weak view with channel dropout (p = ``hermes.fp_dropout``) on every encoder feature but the
input, and learns ŷ on the kept pixels and images::

    seg_fp = mean over pixels of keep·CE(Q_fp, ŷ)        cls_fp = mean over images of keep·CE(c_fp, ŷ_cls)

Both streams run in one extra student forward of [X_in; X_out; U_w] (only the rows a stream needs). They enter
the total beside the pseudo-label terms, ramped with them (ρ_u)::

    L += ρ_u · (seg.w · (w_cp · copy_paste + w_fp · seg_fp) + cls.w · w_fp · cls_fp)
"""
from __future__ import annotations

from typing import Any, Dict

import torch
from torch import nn

from Code.engine.distributed import unwrap
from Code.losses import masked_cross_entropy
from Code.methods.feature_dropout import FeatureDropout
from Code.methods.mixing import bidirectional_mix, pair_indices, region_loss, zero_centred_masks
from Code.methods.terms import Outputs, as_float

Tensor = torch.Tensor


def copy_paste_loss(q_in: Tensor, q_out: Tensor, mix: Dict[str, Tensor], m: Tensor, keep: Tensor,
                    alpha: float) -> Tensor:
    """The ``copy_paste`` term of the module docstring. q_*: P×2×H×W logits of X_in and X_out; ``mix``: Y_in and
    Y_out (:func:`Code.methods.bcp.bidirectional_mix`); m: M (P×H×W bool); keep: the dual-threshold mask of each
    pair's unlabeled image (P×H×W bool; its pixels stay where they are in both mixes)."""
    into = region_loss(q_in, mix["y_in"], m) + alpha * region_loss(q_in, mix["y_in"], ~m & keep)
    outward = region_loss(q_out, mix["y_out"], ~m) + alpha * region_loss(q_out, mix["y_out"], m & keep)
    return into + outward


class HermesStreams:
    """The copy-paste and feature-perturbation streams for one run, from the ``hermes`` block of the config."""

    def __init__(self, settings: Dict[str, Any]):
        self.w_cp, self.w_fp = float(settings["copy_paste"]), float(settings["feature_perturbation"])
        self.ratio, self.alpha = float(settings["copy_paste_ratio"]), float(settings["copy_paste_alpha"])
        self.dropout = FeatureDropout(float(settings["fp_dropout"])) if self.w_fp > 0 else None

    @property
    def active(self) -> bool:
        return self.w_cp > 0 or self.w_fp > 0

    def terms(self, model: nn.Module, x: Tensor, mask: Tensor, weak: Tensor, strong: Tensor,
              pl: Dict[str, Tensor]) -> Dict[str, Tensor]:
        """``copy_paste`` and/or ``seg_fp``, ``cls_fp`` from one student forward (nothing when both are off)."""
        if not self.active:
            return {}
        rows, mix = [], None
        if self.w_cp > 0:
            li, ui = pair_indices(x.shape[0], strong.shape[0], x.device)
            m = zero_centred_masks(li.shape[0], tuple(x.shape[-2:]), self.ratio, x.device)
            mix = bidirectional_mix(x[li], mask[li], strong[ui], pl["seg_pseudo"][ui], m)
            keep = pl["seg_keep"][ui]
            rows += [mix["x_in"], mix["x_out"]]
        n_mix = sum(r.shape[0] for r in rows)
        if self.dropout is not None:
            rows.append(weak)
            self.dropout.attach(unwrap(model))
            self.dropout.rows = slice(n_mix, n_mix + weak.shape[0])
        try:
            out: Outputs = as_float(model(torch.cat(rows)))
        finally:
            if self.dropout is not None:
                self.dropout.rows = None
        terms: Dict[str, Tensor] = {}
        if mix is not None:
            p = n_mix // 2
            seg = out["seg_logits"]
            terms["copy_paste"] = copy_paste_loss(seg[:p], seg[p:n_mix], mix, m, keep, self.alpha)
        if self.dropout is not None:
            terms["seg_fp"] = masked_cross_entropy(out["seg_logits"][n_mix:], pl["seg_pseudo"], pl["seg_keep"])
            terms["cls_fp"] = masked_cross_entropy(out["cls_logits"][n_mix:], pl["cls_pseudo"], pl["cls_keep"])
        return terms

    def weighted(self, terms: Dict[str, Tensor], loss: Dict[str, Any], rho_u: float) -> Any:
        """ρ_u · (seg.w · (w_cp · copy_paste + w_fp · seg_fp) + cls.w · w_fp · cls_fp); 0 when both are off."""
        get = lambda name: terms.get(name, 0.0)  # noqa: E731
        seg = self.w_cp * get("copy_paste") + self.w_fp * get("seg_fp")
        return rho_u * (loss["seg"] * seg + loss["cls"] * self.w_fp * get("cls_fp"))
