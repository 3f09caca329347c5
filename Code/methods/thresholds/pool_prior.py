"""The unlabeled pool's class prior π during training, estimated from the teacher's class posteriors (never from
ground truth) for the prior-aware pseudo-labels (``ssl.prior_aware``) and the pool ratio of the class-adaptive
threshold (``ssl.class_ratio: pool``); docs/design.md, "Class priors".

Two estimators (``ssl.prior_window``):

- window W > 0 (the default): the last W unlabeled images' posteriors (C each) sit in a FIFO queue (a ring buffer:
  a batch of B is written at rows (ptr + 0..B−1) mod W, then ptr ← (ptr + B) mod W, filled ← min(filled + B, W));
  every step π̂ = EM over the filled rows, started from the labeled prior π_s (:func:`.class_prior.em_prior`,
  :data:`PoolPrior.EM_ITERS` iterations). Until the queue is full, the rows there are used.
- window 0 (runs saved before the window existed): π̂ = EM on the batch alone (10 iterations), folded into a running
  average π ← m·π + (1 − m)·π̂ (m = ``ssl.prior_momentum``; the first batch initialises it).

Either way the returned π is bounded by ``ssl.prior_max_shift`` (:func:`.class_prior.bound_prior`: the prior odds
may move by at most that factor from π_s; 0 = unbounded, the behaviour of runs saved before the bound existed).
All state is in buffers (checkpointed and resumed exactly); ``update`` makes no host sync.
"""
from __future__ import annotations

import torch
from torch import nn

from Code.methods.thresholds.class_prior import UNBOUNDED, bound_prior, em_prior


class PoolPrior(nn.Module):
    """Buffers: ``prior`` (C) — window 0: the running average before the bound (its state); window > 0: the last
    bounded estimate (for inspection); ``seen`` — the number of updates; with a window also ``queue`` (W×C),
    ``ptr`` (the next row to write) and ``filled`` (rows holding posteriors)."""

    EM_ITERS = 50  # a window of a few hundred images needs more EM iterations than one batch to settle

    def __init__(self, num_classes: int, momentum: float = 0.99, window: int = 0, max_shift: float = UNBOUNDED):
        super().__init__()
        if window < 0:
            raise ValueError(f"window must be >= 0, got {window}")
        self.momentum, self.window, self.max_shift = float(momentum), int(window), float(max_shift)
        self.register_buffer("prior", torch.full((num_classes,), 1.0 / num_classes))
        self.register_buffer("seen", torch.zeros((), dtype=torch.long))
        if self.window > 0:
            self.register_buffer("queue", torch.zeros(self.window, num_classes))
            self.register_buffer("ptr", torch.zeros((), dtype=torch.long))
            self.register_buffer("filled", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def push(self, probs: torch.Tensor) -> None:
        """Write one batch's posteriors ``probs`` (B×C) into the queue, oldest rows first out (B > W: the last W)."""
        probs = probs.detach().float()[-self.window:]
        n = probs.shape[0]
        rows = (self.ptr + torch.arange(n, device=self.queue.device)) % self.window
        self.queue.index_copy_(0, rows, probs.to(self.queue))
        self.ptr.copy_((self.ptr + n) % self.window)
        self.filled.copy_((self.filled + n).clamp_max(self.window))

    @torch.no_grad()
    def update(self, probs: torch.Tensor, source_prior: torch.Tensor) -> torch.Tensor:
        """Fold in one batch's posteriors ``probs`` (B×C); returns π (C), bounded around ``source_prior``."""
        if self.window == 0:
            estimate = em_prior(probs, source_prior)
            blended = self.momentum * self.prior + (1.0 - self.momentum) * estimate
            self.prior.copy_(torch.where(self.seen > 0, blended, estimate))
            self.seen.add_(1)
            return bound_prior(self.prior, source_prior, self.max_shift)
        self.push(probs)
        valid = torch.arange(self.window, device=self.queue.device) < self.filled
        estimate = em_prior(self.queue, source_prior, iters=self.EM_ITERS, valid=valid)
        self.prior.copy_(bound_prior(estimate, source_prior, self.max_shift))
        self.seen.add_(1)
        return self.prior
