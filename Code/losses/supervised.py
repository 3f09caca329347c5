"""Supervised and pseudo-label losses for segmentation and classification.

    seg_supervised_loss  = ½·(CE(z, m) + (1 − Dice_lesion(softmax z, m)))             z: B×2×H×W, m: B×H×W ∈ {0, 1}
    masked_dice_loss     = 1 − Dice_lesion over kept pixels only                      (pseudo-labels, keep: B×H×W)
    masked_cross_entropy = (1/N)·Σ_n keep_n·CE(z_n, ŷ_n)   over *all* N samples (FixMatch style), z: N×K or B×K×H×W

Dice_lesion is smp's soft Dice (``DiceLoss(mode="multiclass", classes=[1])``): 2·Σ p·t / (Σ p + Σ t), summed over
the whole batch (not per image); like smp, it is 0 when the batch has no (kept) lesion pixel in the target.
Normalising the masked cross-entropy by all samples (not by the kept ones) makes the unsupervised term grow with
the share of confident pseudo-labels, as in FixMatch, instead of weighting one kept sample as much as a full batch.
All losses are computed in float32.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from segmentation_models_pytorch.losses import DiceLoss

_IGNORE = -1
_lesion_dice = DiceLoss(mode="multiclass", classes=[1], from_logits=True)
_masked_lesion_dice = DiceLoss(mode="multiclass", classes=[1], from_logits=True, ignore_index=_IGNORE)


def seg_supervised_loss(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """½·(cross-entropy + soft Dice loss on the lesion class); logits B×2×H×W, mask B×H×W (0/1)."""
    logits, mask = logits.float(), mask.long()
    return 0.5 * (F.cross_entropy(logits, mask) + _lesion_dice(logits, mask))


def masked_dice_loss(logits: torch.Tensor, pseudo: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Soft Dice loss on the lesion class counted only where ``keep``; logits B×2×H×W, pseudo/keep B×H×W."""
    target = torch.where(keep, pseudo.long(), _IGNORE)
    return _masked_lesion_dice(logits.float(), target)


def masked_cross_entropy(logits: torch.Tensor, pseudo: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """mean over all samples of keep·CE(logits, pseudo); logits N×K (or B×K×H×W), pseudo/keep N (or B×H×W)."""
    per_sample = F.cross_entropy(logits.float(), pseudo.long(), reduction="none")
    return (per_sample * keep.float()).mean()
