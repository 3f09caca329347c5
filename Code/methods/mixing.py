"""Copy-paste pieces shared by :mod:`Code.methods.bcp` and Hermes' copy-paste stream
(:mod:`Code.methods.hermes_streams`): rectangle masks, pasting, the bidirectional mix and the region loss.

M (N×H×W bool) is 1 everywhere except one zero rectangle; ⊙ per pixel::

    X_in = X_l ⊙ M + X_u ⊙ (1 − M)      X_out = X_u ⊙ M + X_l ⊙ (1 − M)      (labels likewise)
    L(Q, Y, r) = ½ (Σ r·CE(Q, Y) / Σ r + 1 − soft lesion Dice over the pixels of r)
"""
from __future__ import annotations

from typing import Dict, Tuple

import torch
import torch.nn.functional as F

from Code.losses import masked_dice_loss

Tensor = torch.Tensor


def rectangle_masks(top: Tensor, left: Tensor, size: Tuple[int, int], shape: Tuple[int, int]) -> Tensor:
    """M (N×H×W bool): True everywhere except the rectangle [top, top + size[0]) × [left, left + size[1]) of each
    mask; ``top``/``left``: N integer tensors, ``shape``: (H, W)."""
    rows = torch.arange(shape[0], device=top.device)[None, :, None]
    cols = torch.arange(shape[1], device=top.device)[None, None, :]
    top, left = top[:, None, None], left[:, None, None]
    inside = (rows >= top) & (rows < top + size[0]) & (cols >= left) & (cols < left + size[1])
    return ~inside


def zero_centred_masks(n: int, shape: Tuple[int, int], ratio: float, device: torch.device) -> Tensor:
    """``n`` copy-paste masks (N×H×W bool) with a ⌊ratio·H⌋ × ⌊ratio·W⌋ zero rectangle at a random position
    (torch's global CPU generator, so no host sync and a reproducible draw)."""
    size = (max(1, int(shape[0] * ratio)), max(1, int(shape[1] * ratio)))
    top = torch.randint(0, shape[0] - size[0] + 1, (n,))
    left = torch.randint(0, shape[1] - size[1] + 1, (n,))
    return rectangle_masks(top.to(device), left.to(device), size, shape)


def paste(a: Tensor, b: Tensor, m: Tensor) -> Tensor:
    """a ⊙ M + b ⊙ (1 − M): ``a`` where M is 1, ``b`` inside the zero rectangle; a/b N×C×H×W images or N×H×W
    label maps, M N×H×W bool."""
    return torch.where(m[:, None] if a.dim() == 4 else m, a, b)


def bidirectional_mix(x_l: Tensor, y_l: Tensor, x_u: Tensor, y_u: Tensor, m: Tensor) -> Dict[str, Tensor]:
    """X_in, Y_in, X_out, Y_out of the module docstring for paired batches (x N×C×H×W, y N×H×W, M N×H×W)."""
    return {"x_in": paste(x_l, x_u, m), "y_in": paste(y_l, y_u, m),
            "x_out": paste(x_u, x_l, m), "y_out": paste(y_u, y_l, m)}


def region_loss(logits: Tensor, target: Tensor, region: Tensor) -> Tensor:
    """L(Q, Y, r) = ½ (Σ r·CE / Σ r + Dice loss over r); logits N×2×H×W, target/region N×H×W."""
    ce = F.cross_entropy(logits.float(), target.long(), reduction="none")
    weight = region.float()
    ce = (ce * weight).sum() / weight.sum().clamp_min(1.0)
    return 0.5 * (ce + masked_dice_loss(logits, target, region.bool()))


def mixed_loss(logits: Tensor, target: Tensor, m: Tensor, weight_m: float, weight_rest: float) -> Tensor:
    """weight_m · L(Q, Y, M) + weight_rest · L(Q, Y, 1 − M)."""
    return weight_m * region_loss(logits, target, m) + weight_rest * region_loss(logits, target, ~m)


def pair_indices(n_labeled: int, n_unlabeled: int, device: torch.device) -> Tuple[Tensor, Tensor]:
    """The labeled and unlabeled image of each of the P = max(B_l, B_u) pairs: k mod B_l and k mod B_u."""
    k = torch.arange(max(n_labeled, n_unlabeled), device=device)
    return k % n_labeled, k % n_unlabeled
