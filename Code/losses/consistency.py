"""Inter-task consistency between the segmentation and classification lesion features
(docs/design.md, "The training step", step 6).

    L_itc = (1/B) · Σ_b (1 − cos(a_b, b_b)),    a, b: B×D (e.g. ``consist_seg`` and ``consist_cls``)

Computed in float32; a zero vector has cosine 0 (torch's eps), so the loss stays finite.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from Code.errors import UserError


def inter_task_consistency(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """mean over the batch of 1 − cos(a, b); a, b: B×D. Returns a 0-dim tensor."""
    if a.shape != b.shape or a.dim() != 2:
        raise UserError(f"inter_task_consistency expects two B×D tensors of one shape, got {tuple(a.shape)} "
                        f"and {tuple(b.shape)}")
    return (1.0 - F.cosine_similarity(a.float(), b.float(), dim=1)).mean()
