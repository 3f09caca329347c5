"""``hermes``: FixMatch's pseudo-labelled consistency (:mod:`Code.methods.fixmatch`) with dual thresholds, plus
contrastive learning at two levels and an inter-task consistency (docs/design.md, "The training step").

Pseudo-labels (:func:`Code.methods.thresholds.dual_threshold_mask`): a weak-view prediction is kept when it is
confident for its class, p_ŷ > τ_ŷ = τ_hi − (τ_hi − τ_lo)(1 − r_ŷ), and (``ssl.combine: and``; ``or``)
certain, H(p) < η(t); ``ssl.threshold: single`` falls back to FixMatch's p_ŷ > τ_hi. Then, from the contrast
warm-up on (each a switch of ``components``)::

    image_contrast = SupCon over the (weak, strong) image embeddings, labels = kept pseudo-labels (−1: neither
                     anchor nor positive), negatives also from the image memory bank
    pixel_contrast = pixel contrast over the labeled (mask) and strong (kept pseudo-labels) pixel embeddings,
                     anchors sampled among hard pixels, with the pixel memory bank
    consistency    = 1 − cos(g_seg, g_cls) (``cosine``) or 1 − cos(g_seg, sg(g_cls)) (``stopgrad``) on the strong
                     view: the segmentation and classification branches agree on the lesion feature

weighted as in :mod:`Code.methods.terms`. Beyond the paper, off by default: copy-paste and feature-perturbation
streams (the ``hermes`` block, :mod:`Code.methods.hermes_streams`). After the total is formed the banks enqueue the labeled and kept weak
image embeddings and the sampled pixel anchors (detached). State: FixMatch's plus ``banks``.
"""
from __future__ import annotations

from typing import Any, Dict, Optional

import torch
from torch import nn

from Code.engine.config import schedule_steps
from Code.errors import UserError
from Code.losses import MemoryBank, PixelContrastLoss, SupConLoss, inter_task_consistency
from Code.methods.base import register
from Code.methods.fixmatch import FixMatch
from Code.methods.hermes_streams import HermesStreams
from Code.methods.terms import Outputs, combine_terms, kept_or_ignore, ramp_weights

Tensor = torch.Tensor


def consistency_term(out_s: Outputs, mode: str) -> Tensor:
    """Inter-task consistency on the strong view: ``cosine`` = 1 − cos(g_seg, g_cls) with both heads free (the
    reference); ``stopgrad`` = 1 − cos(g_seg, sg(g_cls)): the segmentation side must predict the classifier's
    lesion feature, which cannot move to meet it."""
    target = out_s["consist_cls"].detach() if mode == "stopgrad" else out_s["consist_cls"]
    return inter_task_consistency(out_s["consist_seg"], target)


@register("hermes")
class Hermes(FixMatch):
    @classmethod
    def own_settings(cls, config: Dict[str, Any]) -> Dict[str, Any]:
        """Hermes' teacher, τ_hi, pseudo-label loss and ramp live in ``ssl`` (shared with its ablations)."""
        ssl = config["ssl"]
        return {"teacher": ssl["teacher"], "threshold": ssl["tau_hi"], "seg_unsup_loss": ssl["seg_unsup_loss"],
                "unsup_rampup": ssl["unsup_rampup"]}

    def build(self, config: Dict[str, Any], device: torch.device, student: Optional[nn.Module] = None,
              labeled_prior: Optional[Tensor] = None) -> None:
        super().build(config, device, student, labeled_prior)
        comp, ssl, c, m = config["components"], config["ssl"], config["contrast"], config["model"]
        self.combine = "confidence" if ssl["threshold"] == "single" else ssl["combine"]
        self.image_contrast, self.pixel_contrast = comp["image_contrast"], comp["pixel_contrast"]
        self.memory_bank = comp["memory_bank"] and (self.image_contrast or self.pixel_contrast)
        self.consistency, self.consistency_mode = comp["consistency"], comp["consistency_mode"]
        banks = nn.ModuleDict()
        if self.memory_bank and self.image_contrast:
            banks["image"] = MemoryBank(2, c["image_bank_size"], m["image_embed_dim"])
        if self.memory_bank and self.pixel_contrast:
            banks["pixel"] = MemoryBank(2, c["pixel_bank_size"], m["pixel_embed_dim"])
        self.banks = banks.to(device)
        self.levels: Dict[str, Tensor] = {}  # this step's (floor, chance) per contrastive loss, for extra_logs
        self.supcon = SupConLoss(temperature=c["temperature"], num_classes=2)
        self.pixel_loss = PixelContrastLoss(temperature=c["temperature"], max_samples=c["max_samples"],
                                            max_views=c["max_views"], ignore_index=-1, min_pixels=c["min_pixels"])
        self.streams = HermesStreams(config["hermes"])

    def stream_terms(self, model: nn.Module, x: Tensor, mask: Tensor, weak: Tensor, strong: Tensor,
                     pl: Dict[str, Tensor]) -> Dict[str, Tensor]:
        """Copy-paste and feature-perturbation terms (``hermes`` block; none by default), Code/methods/hermes_streams.py."""
        return self.streams.terms(model, x, mask, weak, strong, pl)

    def total(self, terms: Dict[str, Tensor], step: int) -> Tensor:
        """:func:`Code.methods.terms.combine_terms` plus the weighted extra streams."""
        total = combine_terms(terms, self.loss_config, step)
        if not self.streams.active:
            return total
        rho_u = ramp_weights(self.loss_config, step)["unsup"]
        return total + self.streams.weighted(terms, self.config["loss"], rho_u)

    def warm(self, step: int) -> bool:
        """Whether the contrastive terms (and the bank updates) run at iteration ``step``."""
        return step >= schedule_steps(self.config, "contrast_warmup")

    def extra_terms(self, out_l: Outputs, out_w: Outputs, out_s: Outputs, mask: Tensor, pl: Dict[str, Tensor],
                    step: int) -> Dict[str, Tensor]:
        terms = self.contrast_terms(out_l, out_w, out_s, mask, pl) if self.warm(step) else {}
        if self.consistency:
            terms["consistency"] = consistency_term(out_s, self.consistency_mode)
        return terms

    def contrast_terms(self, out_l: Outputs, out_w: Outputs, out_s: Outputs, mask: Tensor,
                       pl: Dict[str, Tensor]) -> Dict[str, Tensor]:
        """Image-level SupCon over (weak, strong) embeddings and pixel-level contrast over labeled + strong views."""
        terms: Dict[str, Tensor] = {}
        banks = self.banks
        if self.image_contrast:  # images that failed the thresholds are label −1: neither anchors nor positives
            feats = torch.stack([out_w["image_embed"].detach(), out_s["image_embed"]], dim=1)
            bank = banks["image"].features(padded=True) if "image" in banks else (None, None)
            terms["image_contrast"] = self.supcon(feats, kept_or_ignore(pl["cls_pseudo"], pl["cls_keep"]),
                                                  bank_features=bank[0], bank_labels=bank[1])
            self._keep_levels("image_contrast", self.supcon)
        if self.pixel_contrast:
            pixel_labels = torch.cat([mask, kept_or_ignore(pl["seg_pseudo"], pl["seg_keep"])])
            embed = torch.cat([out_l["pixel_embed"], out_s["pixel_embed"]])
            predict = torch.cat([out_l["seg_logits"], out_s["seg_logits"]]).argmax(1)
            terms["pixel_contrast"] = self.pixel_loss(embed, pixel_labels, predict,
                                                      bank=banks["pixel"] if "pixel" in banks else None)
            self._keep_levels("pixel_contrast", self.pixel_loss)
        return terms

    def _keep_levels(self, name: str, loss) -> None:
        levels = getattr(loss, "last_levels", None)  # a stand-in loss (tests) may not report them
        if levels is not None:
            self.levels[name] = levels

    def extra_logs(self) -> Dict[str, Tensor]:
        """Where each contrastive loss of this step can lie: ``image_contrast/floor``, ``image_contrast/chance``
        (and pixel), :func:`Code.losses.contrastive.supcon_levels` — a loss near its floor has learned, one near
        chance has not. Nothing before the contrast warm-up."""
        levels, self.levels = self.levels, {}
        return {f"{name}/{kind}": value[i] for name, value in levels.items()
                for i, kind in enumerate(("floor", "chance"))}

    def after_terms(self, out_l: Outputs, out_w: Outputs, label: Tensor, pl: Dict[str, Tensor], step: int) -> None:
        """Enqueue labeled image embeddings, kept weak-view embeddings and the sampled pixel anchors (detached)."""
        if not self.warm(step):
            return
        if "image" in self.banks:  # label −1 = not kept: the bank skips it (no boolean indexing, no host sync)
            feats = torch.cat([out_l["image_embed"].detach(), out_w["image_embed"].detach()])
            self.banks["image"].enqueue(feats, torch.cat([label, kept_or_ignore(pl["cls_pseudo"], pl["cls_keep"])]))
        if "pixel" in self.banks:
            sampled = self.pixel_loss.last_anchors
            if sampled is not None:
                self.banks["pixel"].enqueue(*sampled)

    def scalars(self) -> Dict[str, float]:
        """Each bank's fill per class, as a share of its size."""
        out = {}
        for name, bank in self.banks.items():
            for c, fill in enumerate(bank.filled.tolist()):
                out[f"bank/{name}_fill/{c}"] = fill / bank.queue.shape[1]
        return out

    def state_dict(self) -> Dict[str, Any]:
        return dict(super().state_dict(), banks=self.banks.state_dict())

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        super().load_state_dict(state)
        try:
            self.banks.load_state_dict(state.get("banks", {}))
        except RuntimeError as error:
            raise UserError(f"the checkpoint's memory banks do not match this run's components/contrast settings "
                            f"({str(error).splitlines()[0]})") from None
