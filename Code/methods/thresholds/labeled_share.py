"""The class shares of the labeled data a run has trained on so far: π for ``ssl.class_ratio: relative``
(:func:`.dual_threshold.relative_ratio`).

    n_c ← n_c + #{y == c}  for every labeled batch y (masks B×H×W, or labels B),   π_c = n_c / Σ_c' n_c'

(π uniform before the first batch). The counts are float64 buffers (a BUSI run sees ~10⁸ pixels, past float32's
exact integers), checkpointed with the method, so a resumed run continues with the same π. No host sync.
"""
from __future__ import annotations

import torch
from torch import nn


class LabeledShare(nn.Module):
    """Buffer ``counts`` (C, float64): how many labeled pixels (or images) of each class were seen."""

    def __init__(self, num_classes: int = 2):
        super().__init__()
        self.register_buffer("counts", torch.zeros(num_classes, dtype=torch.float64))

    @torch.no_grad()
    def update(self, labels: torch.Tensor) -> None:
        """Add the classes of ``labels`` (any shape of class indices in [0, C)) to the counts."""
        flat = labels.detach().reshape(-1).long().to(self.counts.device)
        self.counts += torch.bincount(flat, minlength=self.counts.numel())[: self.counts.numel()].double()

    def share(self) -> torch.Tensor:
        """π (C, float32): the counts normalised; uniform while nothing has been counted."""
        total = self.counts.sum()
        uniform = torch.full_like(self.counts, 1.0 / self.counts.numel())
        return torch.where(total > 0, self.counts / total.clamp_min(1.0), uniform).float()
