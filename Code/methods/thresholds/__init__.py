"""Threshold policies: which weak-view pseudo-labels a method keeps, and the class prior they are measured against.

- :mod:`.dual_threshold` — class-adaptive confidence and entropy thresholds (Hermes), or FixMatch's single fixed
  confidence threshold (``combine="confidence"``); also the sigmoid ramp ρ(t) shared by every schedule.
- :mod:`.class_prior` — EM estimate of a class prior from posteriors, the re-weighting of posteriors to a prior
  and the bound on that correction (also used at test time: Code/engine/prior_correction.py).
- :mod:`.pool_prior` — the unlabeled pool's class prior during training (EM over a window of the teacher's
  posteriors, bounded), for the prior-aware pseudo-labels.
- :mod:`.labeled_share` — the class shares of the labeled data seen so far (pixels or images), the π that
  ``ssl.class_ratio: relative`` measures the class-adaptive threshold's r against.
- :mod:`.self_adaptive` — FreeMatch's self-adaptive global and class-wise thresholds (EMAs of the weak predictions).
"""
from Code.methods.thresholds.class_prior import UNBOUNDED, adjust_to_prior, bound_prior, em_prior
from Code.methods.thresholds.labeled_share import LabeledShare
from Code.methods.thresholds.pool_prior import PoolPrior
from Code.methods.thresholds.self_adaptive import SelfAdaptiveThreshold
from Code.methods.thresholds.dual_threshold import (COMBINE_MODES, dual_threshold_mask, entropy_threshold, relative_ratio,
                                                    sigmoid_rampup)

__all__ = ["COMBINE_MODES", "LabeledShare", "PoolPrior", "UNBOUNDED", "adjust_to_prior", "bound_prior",
           "dual_threshold_mask", "em_prior", "entropy_threshold", "relative_ratio", "SelfAdaptiveThreshold",
           "sigmoid_rampup"]
