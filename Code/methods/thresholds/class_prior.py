"""Class-prior correction: the EM estimate of a target prior from posteriors, the re-weighting of posteriors to a
prior, and the bound on that correction (docs/design.md, "Class priors").

A classifier trained on a labeled set with prior π_s outputs p(c|x) ∝ p(x|c)·π_s(c). On a pool with prior π the
posterior is p'(c|x) ∝ p(c|x)·π(c)/π_s(c) (Saerens, Latinne & Decaestecker, Neural Computation 2002). π is
unknown; their EM estimates it from the posteriors alone, starting from π = π_s:

    repeat:  w_i(c) = p_i(c)·π(c)/π_s(c) / Σ_c' p_i(c')·π(c')/π_s(c')        (E step, i over the images)
             π(c)   = Σ_i v_i·w_i(c) / Σ_i v_i                                  (M step; v_i = 1, or 0 for unused rows)

On a handful of images this maximum-likelihood estimate sits on the boundary (π ≈ one-hot), and a loop that feeds
the corrected labels back into the model that produced the posteriors can drive it there. :func:`bound_prior`
limits how far π may move from π_s: with r = log π − log π_s centred over the classes (r ← r − mean r), each r(c)
is clamped to [−log(k)/2, +log(k)/2] and π = softmax(log π_s + r). Then max_c r(c) − min_c r(c) ≤ log k: the odds
of any two classes, π(c)/π(c'), differ from π_s(c)/π_s(c') by a factor of at most k either way (for two classes:
the prior odds π(1)/π(0) move by at most k; a collapsed estimate lands exactly on the bound). k =
:data:`UNBOUNDED` (0) leaves π as it is; k = 1 pins π to π_s.

The pool prior of training (a window of the teacher's posteriors) is :mod:`.pool_prior`.
"""
from __future__ import annotations

import math
from typing import Optional

import torch

UNBOUNDED = 0.0  # ssl.prior_max_shift sentinel: no bound on the correction (the behaviour before the bound existed)


def em_prior(probs: torch.Tensor, source_prior: torch.Tensor, iters: int = 10, floor: float = 1e-3,
             valid: Optional[torch.Tensor] = None) -> torch.Tensor:
    """EM estimate of the target prior π (C) from posteriors ``probs`` (N×C) under ``source_prior`` π_s (C),
    started from π_s. ``valid`` (N, 0/1 or bool, optional) leaves rows out of the M step's mean (a partly filled
    queue, without a host sync); no valid row returns π_s. Each M step floors π at ``floor`` and renormalises."""
    probs = probs.detach().float()
    source_prior = source_prior.to(probs)
    prior = source_prior.clone()
    if valid is None:  # every row (the per-batch estimator; kept operation for operation for old runs)
        for _ in range(iters):
            prior = adjust_to_prior(probs, prior, source_prior).mean(dim=0).clamp_min(floor)
            prior = prior / prior.sum()
        return prior
    weight = valid.to(probs)
    total = weight.sum()
    for _ in range(iters):
        mean = (adjust_to_prior(probs, prior, source_prior) * weight[:, None]).sum(dim=0) / total.clamp_min(1e-12)
        estimate = mean.clamp_min(floor)
        prior = torch.where(total > 0, estimate / estimate.sum(), source_prior)
    return prior


def adjust_to_prior(probs: torch.Tensor, prior: torch.Tensor, source_prior: torch.Tensor) -> torch.Tensor:
    """p'(c|x) = p(c|x)·π(c)/π_s(c), renormalised over c; ``probs`` B×C, priors C."""
    scaled = probs * (prior / source_prior).to(probs)
    return scaled / scaled.sum(dim=1, keepdim=True).clamp_min(1e-12)


def bound_prior(prior: torch.Tensor, source_prior: torch.Tensor, max_shift: float) -> torch.Tensor:
    """``prior`` (C) moved back towards ``source_prior`` π_s (C) so that the centred log-ratio
    r = log π − log π_s − mean(log π − log π_s) lies in [−log(k)/2, log(k)/2], k = ``max_shift`` ≥ 1;
    returns softmax(log π_s + clamp(r)). ``max_shift`` = :data:`UNBOUNDED` returns ``prior`` unchanged."""
    if max_shift == UNBOUNDED:
        return prior
    if max_shift < 1.0:
        raise ValueError(f"max_shift must be {UNBOUNDED:g} (unbounded) or >= 1, got {max_shift}")
    log_source = source_prior.to(prior).clamp_min(1e-12).log()
    ratio = prior.clamp_min(1e-12).log() - log_source
    ratio = ratio - ratio.mean()
    half = 0.5 * math.log(max_shift)
    return torch.softmax(log_source + ratio.clamp(-half, half), dim=0)
