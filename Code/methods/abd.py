"""``abd`` (Chi, Pang, Zhang & Liu, "Adaptive Bidirectional Displacement for Semi-Supervised Medical Image
Segmentation", CVPR 2024, arXiv:2405.00378) on the BCP baseline, the paper's best setting, as the authors run it
(github.com/chy-upc/ABD, ``code/train_ACDC_BCP.py`` ``self_train`` and ``code/utils/displacement.py``
``ABD_R_BCP``): two student networks f₁ (the run's network, evaluated and exported) and f₂ (built here,
:meth:`ABD.extra_networks`) plus an EMA teacher T of f₁. The stored copy of the paper held its abstract and
introduction only, so every detail below is read from that code; ABD-I (inverse displacement on labeled images)
is not part of this variant and is not used.

**Views.** Labeled (x, x̃, Y_l): B_l×C×H×W weak and strong views (pixel-aligned) with their masks B_l×H×W;
unlabeled (u, ũ): B_u×C×H×W. The teacher labels both unlabeled views (one no-grad forward):
Ŷ = argmax T(u), Ỹ = argmax T(ũ) (B_u×H×W).

**BCP mixes** (Code/methods/bcp.py and mixing.py: pairs k mod B_l and k mod B_u, P = max(B_l, B_u), masks M
P×H×W, one per pair and shared by the two views). Network 1 gets the weak mixes, network 2 the strong ones::

    X¹ = [X_in, X_out] of (x, Y_l, u, Ŷ)       X² = [X_in, X_out] of (x̃, Y_l, ũ, Ỹ)      N = 2P images each
    Q¹ = f₁(X¹), Q² = f₂(X²)  (N×2×H×W);  bcp_in_k, bcp_out_k = bcp's terms of Q^k (pseudo-labelled parts × α)

**Cross pseudo supervision** (CPS) on the mixes, Dice the soft Dice loss of the lesion class against the other
network's hard label (no gradient through the label)::

    cps_1 = Dice(Q¹, argmax Q²)        cps_2 = Dice(Q², argmax Q¹)

**ABD-R** (reliable bidirectional displacement between image n of X¹ and image n of X², n < N). Patch grid
g×g (K = g² patches, ``abd.grid``, the authors' 4×4 of 64-pixel patches on 256×256 images), per-patch
confidence C^k[n, j] = mean over patch j of max_c softmax(Q^k)[n, c] (N×K) and mean logits Z^k[n, j] (N×K×2),
all from the students' own (detached) outputs. Per image: b = argmin_j C¹[n, j], d = argmin_j C²[n, j] (the least
confident patch of each view). With probability ½ (``abd.kl_share``, one draw per image from torch's generator)
the patch given away is chosen among the top-k confident ones (k = ``abd.top_k``, the authors' 4) by closeness of
its class distribution to the other view's least confident patch::

    a = argmin_{j ∈ topk C¹[n]} KL(softmax Z²[n, d] ‖ softmax Z¹[n, j])
    c = argmin_{j ∈ topk C²[n]} KL(softmax Z¹[n, b] ‖ softmax Z²[n, j])

otherwise a = argmax C¹[n], c = argmax C²[n]. Then A¹ = X¹ with patch b replaced by patch c of X², and
A² = X² with patch d replaced by patch a of A¹ (Code/methods/abd_patches.py). The new sample A = [A¹; A²]
(2N×C×H×W) carries no label: both networks see it, R^k = f_k(A), and supervise each other::

    cps_abd_1 = Dice(R¹, argmax R²)    cps_abd_2 = Dice(R², argmax R¹)

**Total** (the authors' loss_1 + loss_2 with their unit weights; w = ``abd.cps_weight``)::

    L = seg.w · [Σ_k (bcp_in_k + bcp_out_k) + w · (cps_1 + cps_2 + cps_abd_1 + cps_abd_2)] + cls.w · (cls_1 + cls_2)

cls_k = CE of f_k's image head on the plain labeled images x (labeled only, as bcp). One optimiser step moves both
networks (their parameters share the run's optimisers and lr schedule); then T ← EMA of f₁ (``bcp.ema_decay``,
0.99 as the authors'). Logged: every term, and ``agree``, the share of mixed-image pixels where argmax Q¹ =
argmax Q². **Pre-training**: bcp's labeled-only copy-paste on f₁ (``bcp.pretrain_iters``); after every
pre-training step T and f₂ become copies of f₁, so self-training starts from one pre-trained network in all
three, as the authors load their pre-trained checkpoint into model 1, model 2 and the EMA model.

**Where this engine differs.** One 2-class (background/lesion) head on BUSI images and the lesion-class Dice of
every Hermes loss, where the authors' Dice averages ACDC's 4 classes (background included); bcp's pairing and one
mask per pair, where the authors pair two halves of each batch under one mask; no largest-connected-component
filter on the teacher's labels (the authors keep each class's largest component); the engine's strong view
(photometric, Code/data/transforms.py) of both labeled and unlabeled images, where the authors' labeled strong
view also zeroes the label under its cutout; pre-training inside the run, ending with its last weights (the
authors reload the pre-training's best-val checkpoint, optimiser state included, into both students: here f₂'s
optimiser moments start at zero); Adam/SGD as every Hermes method (the authors: SGD, lr 0.01) with
``train.grad_clip`` over both networks together; the EMA decay capped early by (1 + t)/(10 + t) as every teacher
here; the ½ draw from torch's generator (saved with the run) instead of Python's; the KL on the engine's 2
classes. Under DDP (world size > 1) the method refuses to run: f₂ is not wrapped.
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from Code.engine.builders import build_model
from Code.errors import UserError
from Code.losses import masked_dice_loss
from Code.methods.abd_patches import patch_confidence, patch_means, patch_size, reliable_choice, \
    reliable_displacement
from Code.methods.base import StepResult, register
from Code.methods.bcp import BCP
from Code.methods.mixing import bidirectional_mix, mixed_loss, pair_indices
from Code.methods.terms import as_float

Tensor = torch.Tensor
PEER_SEED_OFFSET = 1_000_003  # f₂'s initialisation seed: config seed + this (its own stream, reproducible)


def build_peer(config: Dict[str, Any], device: torch.device) -> nn.Module:
    """f₂: a network built like the run's, initialised from its own generator seeded with seed + offset (the
    global RNG is left as it was, so everything drawn after this is the same as without the peer)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(config["seed"]) + PEER_SEED_OFFSET)
        return build_model(config).to(device)


def cross_dice(logits: Tensor, other: Tensor) -> Tensor:
    """Dice(Q, argmax Q'): the lesion-class soft Dice loss of ``logits`` against the other network's hard label
    (N×2×H×W each; no gradient flows into ``other``)."""
    target = other.detach().argmax(1)
    return masked_dice_loss(logits, target, torch.ones_like(target, dtype=torch.bool))


def _no_ddp() -> None:
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        raise UserError(f"method abd trains a second network that is not wrapped for DDP: run it on one process "
                        f"(world size is {dist.get_world_size()})")


@register("abd")
class ABD(BCP):
    labeled_strong = True  # network 2 mixes the strong views of the labeled images too

    def build(self, config: Dict[str, Any], device: torch.device, student: Optional[nn.Module] = None,
              labeled_prior: Optional[Tensor] = None) -> None:
        _no_ddp()
        super().build(config, device, student, labeled_prior)
        self.abd = config["abd"]
        self.grid, self.top_k = int(self.abd["grid"]), int(self.abd["top_k"])
        patch_size((int(config["data"]["size"]),) * 2, self.grid)  # fail at build, not at the first step
        if self.top_k > self.grid ** 2:
            raise UserError(f"abd.top_k {self.top_k} exceeds the {self.grid ** 2} patches of abd.grid {self.grid}")
        self.peer = build_peer(config, device) if student is not None else None

    def extra_networks(self) -> Tuple[nn.Module, ...]:
        return (self.peer,) if self.peer is not None else ()

    def step(self, model: nn.Module, labeled, unlabeled, step: int) -> StepResult:
        """``labeled``: (x, mask, label, x_strong); ``unlabeled``: (weak, strong); see the module docstring."""
        if step < self.pretrain_steps():
            return self._pretrain_step(model, labeled[:3], unlabeled)
        x, mask, label, x_s = labeled
        weak, strong = unlabeled[0], unlabeled[1]
        n, u = x.shape[0], weak.shape[0]
        out_t = as_float(self.teacher(torch.cat([weak, strong])))
        probs_t = out_t["seg_logits"].softmax(1)
        pseudo = probs_t.argmax(1)
        li, ui = pair_indices(n, u, x.device)
        m = self.masks(li.shape[0], x)
        mix_1 = bidirectional_mix(x[li], mask[li], weak[ui], pseudo[:u][ui], m)
        mix_2 = bidirectional_mix(x_s[li], mask[li], strong[ui], pseudo[u:][ui], m)
        out_1 = as_float(model(torch.cat([x, mix_1["x_in"], mix_1["x_out"]])))
        out_2 = as_float(self.peer(torch.cat([x, mix_2["x_in"], mix_2["x_out"]])))
        q_1, q_2 = out_1["seg_logits"][n:], out_2["seg_logits"][n:]
        terms = {"cls_sup": F.cross_entropy(out_1["cls_logits"][:n], label),
                 "cls_sup_2": F.cross_entropy(out_2["cls_logits"][:n], label),
                 **self._bcp_terms(q_1, mix_1, m, ""), **self._bcp_terms(q_2, mix_2, m, "_2"),
                 "cps_1": cross_dice(q_1, q_2), "cps_2": cross_dice(q_2, q_1)}
        sample = self._displaced(torch.cat([mix_1["x_in"], mix_1["x_out"]]),
                                 torch.cat([mix_2["x_in"], mix_2["x_out"]]), q_1.detach(), q_2.detach())
        r_1, r_2 = as_float(model(sample))["seg_logits"], as_float(self.peer(sample))["seg_logits"]
        terms.update(cps_abd_1=cross_dice(r_1, r_2), cps_abd_2=cross_dice(r_2, r_1))
        total = self._abd_total(terms)
        logs = {k: v.detach() for k, v in terms.items()}
        logs["agree"] = (q_1.argmax(1) == q_2.argmax(1)).float().mean().detach()
        cls_pseudo = out_t["cls_logits"][:u].argmax(1)
        vis = {"input": weak, "pseudo": pseudo[:u], "keep": torch.ones_like(pseudo[:u], dtype=torch.bool),
               "seg_probs": probs_t[:u], "gt": mask, "pred_logits": out_1["seg_logits"][:n],
               "saliency": out_1["saliency"][:n] if "saliency" in out_1 else None, "cls_pseudo": cls_pseudo,
               "cls_keep": torch.zeros_like(cls_pseudo, dtype=torch.bool),
               "cls_probs": out_t["cls_logits"][:u].softmax(1)}
        return total, logs, vis  # cls_keep: no cls pseudo-label is used

    def _bcp_terms(self, q: Tensor, mix: Dict[str, Tensor], m: Tensor, suffix: str) -> Dict[str, Tensor]:
        """bcp_in / bcp_out of one network's mixed logits ``q`` (2P×2×H×W: the X_in then the X_out images)."""
        p, alpha = m.shape[0], float(self.settings["alpha"])
        return {f"bcp_in{suffix}": mixed_loss(q[:p], mix["y_in"], m, 1.0, alpha),
                f"bcp_out{suffix}": mixed_loss(q[p:], mix["y_out"], m, alpha, 1.0)}

    def _displaced(self, x_1: Tensor, x_2: Tensor, q_1: Tensor, q_2: Tensor) -> Tensor:
        """ABD-R's new sample [A¹; A²] from the two views' mixed images (N×C×H×W) and logits (N×2×H×W)."""
        use_kl = (torch.rand(x_1.shape[0]) < float(self.abd["kl_share"])).to(x_1.device)
        choice = reliable_choice(patch_confidence(q_1.softmax(1), self.grid),
                                 patch_confidence(q_2.softmax(1), self.grid),
                                 patch_means(q_1, self.grid), patch_means(q_2, self.grid), self.top_k, use_kl)
        return reliable_displacement(x_1, x_2, choice, self.grid)

    def _abd_total(self, terms: Dict[str, Tensor]) -> Tensor:
        w = self.config["loss"]
        bcp = sum(terms[k] for k in ("bcp_in", "bcp_out", "bcp_in_2", "bcp_out_2"))
        cps = sum(terms[k] for k in ("cps_1", "cps_2", "cps_abd_1", "cps_abd_2"))
        seg = bcp + float(self.abd["cps_weight"]) * cps
        return w["seg"] * seg + w["cls"] * (terms["cls_sup"] + terms["cls_sup_2"])

    def after_step(self, student: nn.Module, step: int) -> None:
        """bcp's teacher update; during pre-training f₂ also becomes a copy of f₁."""
        super().after_step(student, step)
        if step < self.pretrain_steps():
            self.peer.load_state_dict(student.state_dict())

    def state_dict(self) -> Dict[str, Any]:
        return {"teacher": self.teacher.state_dict(), "peer": self.peer.state_dict()}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        if state.get("peer") is None:
            raise UserError("the checkpoint has no second network (it was not saved by an abd run)")
        super().load_state_dict(state)
        self.peer.load_state_dict(state["peer"])
