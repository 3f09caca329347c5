"""The unlabeled pool's class prior, estimated from the teacher (never from ground truth), and prior-aware
pseudo-labels (a beyond-the-paper switch, ``ssl.prior_aware``; docs/design.md, "Class priors").

A classifier trained on a labeled set with prior π_s outputs p(c|x) ∝ p(x|c)·π_s(c). On a pool with prior π the
posterior is p'(c|x) ∝ p(c|x)·π(c)/π_s(c) (Saerens, Latinne & Decaestecker, Neural Computation 2002). π is
unknown; their EM estimates it from the posteriors alone:

    repeat:  w_i(c) = p_i(c)·π(c)/π_s(c) / Σ_c' p_i(c')·π(c')/π_s(c')        (E step, i over the batch)
             π(c)   = mean_i w_i(c)                                              (M step)

Per unlabeled batch the EM estimate π̂ is noisy, so the pool prior is a running average
``π ← m·π + (1 − m)·π̂`` (the first batch initialises it).
"""
from __future__ import annotations

import torch
from torch import nn


def em_prior(probs: torch.Tensor, source_prior: torch.Tensor, iters: int = 10, floor: float = 1e-3) -> torch.Tensor:
    """EM estimate of the target prior π (C) from posteriors ``probs`` (B×C) under ``source_prior`` π_s (C)."""
    probs = probs.detach().float()
    source_prior = source_prior.to(probs)
    prior = source_prior.clone()
    for _ in range(iters):
        weights = adjust_to_prior(probs, prior, source_prior)
        prior = weights.mean(dim=0).clamp_min(floor)
        prior = prior / prior.sum()
    return prior


def adjust_to_prior(probs: torch.Tensor, prior: torch.Tensor, source_prior: torch.Tensor) -> torch.Tensor:
    """p'(c|x) = p(c|x)·π(c)/π_s(c), renormalised over c; ``probs`` B×C, priors C."""
    scaled = probs * (prior / source_prior).to(probs)
    return scaled / scaled.sum(dim=1, keepdim=True).clamp_min(1e-12)


class PoolPrior(nn.Module):
    """Running estimate of the unlabeled pool's prior (buffers, so it is checkpointed and resumed exactly)."""

    def __init__(self, num_classes: int, momentum: float = 0.99):
        super().__init__()
        self.momentum = float(momentum)
        self.register_buffer("prior", torch.full((num_classes,), 1.0 / num_classes))
        self.register_buffer("seen", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def update(self, probs: torch.Tensor, source_prior: torch.Tensor) -> torch.Tensor:
        """Fold in the EM estimate of one batch's posteriors ``probs`` (B×C); returns the updated prior.
        No host sync: the first batch is selected with ``torch.where``."""
        estimate = em_prior(probs, source_prior)
        blended = self.momentum * self.prior + (1.0 - self.momentum) * estimate
        self.prior.copy_(torch.where(self.seen > 0, blended, estimate))
        self.seen.add_(1)
        return self.prior
