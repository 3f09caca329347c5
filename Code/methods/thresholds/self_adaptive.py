"""FreeMatch's self-adaptive thresholds (Wang et al., "FreeMatch: Self-adaptive Thresholding for Semi-supervised
Learning", ICLR 2023, Sec. 3.2) and the pseudo-label histogram of its fairness term (Sec. 3.3).

With q_b = softmax of the weak view of unlabeled image b (B×C), q̂_b = argmax_c q_b(c), λ the momentum, and every
running value starting at 1/C (C classes)::

    τ_t     = λ·τ_{t−1}     + (1 − λ)·mean_b max_c q_b(c)          self-adaptive global threshold
    p̃_t(c)  = λ·p̃_{t−1}(c)  + (1 − λ)·mean_b q_b(c)               self-adaptive local (class) expectation
    h_t(c)  = λ·h_{t−1}(c)  + (1 − λ)·mean_b 1[q̂_b = c]            pseudo-label histogram (for the fairness term)
    τ_t(c)  = MaxNorm(p̃_t)(c) · τ_t = p̃_t(c) / max_c' p̃_t(c') · τ_t
    keep_b  ⇔ max_c q_b(c) > τ_t(q̂_b)

The batch of step t is folded in before its mask is taken (τ_t includes it). Under DDP the three batch means are
averaged over the ranks (equal per-rank batches), so every rank holds the same state. No host sync anywhere.
"""
from __future__ import annotations

from typing import Dict, Tuple

import torch
import torch.distributed as dist
from torch import nn

Tensor = torch.Tensor


def _rank_mean(value: Tensor) -> Tensor:
    """``value`` averaged over the DDP ranks (itself when not distributed)."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        value = value.clone()
        dist.all_reduce(value)
        value = value / dist.get_world_size()
    return value


class SelfAdaptiveThreshold(nn.Module):
    """The running τ_t, p̃_t and h_t of the module docstring, as buffers (checkpointed and resumed exactly)."""

    def __init__(self, num_classes: int, momentum: float = 0.999):
        super().__init__()
        self.momentum = float(momentum)
        self.register_buffer("tau", torch.full((), 1.0 / num_classes))
        self.register_buffer("p_tilde", torch.full((num_classes,), 1.0 / num_classes))
        self.register_buffer("hist", torch.full((num_classes,), 1.0 / num_classes))

    @torch.no_grad()
    def update(self, probs: Tensor) -> None:
        """Fold in one batch of weak-view probabilities ``probs`` (B×C)."""
        probs = probs.detach().float()
        confidence, pseudo = probs.max(dim=1)
        hist = torch.zeros_like(self.hist).scatter_add_(0, pseudo, torch.ones_like(confidence)) / probs.shape[0]
        stats = _rank_mean(torch.cat([confidence.mean().reshape(1), probs.mean(dim=0), hist]))
        lam, c = self.momentum, self.p_tilde.numel()
        self.tau.mul_(lam).add_((1.0 - lam) * stats[0])
        self.p_tilde.mul_(lam).add_((1.0 - lam) * stats[1:1 + c])
        self.hist.mul_(lam).add_((1.0 - lam) * stats[1 + c:])

    def class_thresholds(self) -> Tensor:
        """τ_t(c) = MaxNorm(p̃_t)(c) · τ_t (C)."""
        return self.p_tilde / self.p_tilde.max() * self.tau

    @torch.no_grad()
    def select(self, probs: Tensor) -> Tuple[Tensor, Tensor, Dict[str, Tensor]]:
        """Update with ``probs`` (B×C), then ``(pseudo B long, keep B bool, stats)``; stats are 0-dim tensors:
        ``tau``, ``threshold_<c>``, ``p_tilde_<c>``, ``hist_<c>`` and ``keep_ratio``."""
        self.update(probs)
        confidence, pseudo = probs.detach().float().max(dim=1)
        thresholds = self.class_thresholds()
        keep = confidence > thresholds[pseudo]
        stats = {"tau": self.tau.clone(), "keep_ratio": keep.float().mean()}
        for c in range(thresholds.numel()):
            stats[f"threshold_{c}"] = thresholds[c].clone()
            stats[f"p_tilde_{c}"] = self.p_tilde[c].clone()
            stats[f"hist_{c}"] = self.hist[c].clone()
        return pseudo, keep, stats
