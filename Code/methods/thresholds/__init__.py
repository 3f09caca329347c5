"""Threshold policies: which weak-view pseudo-labels a method keeps, and the class prior they are measured against.

- :mod:`.dual_threshold` — class-adaptive confidence and entropy thresholds (Hermes), or FixMatch's single fixed
  confidence threshold (``combine="confidence"``); also the sigmoid ramp ρ(t) shared by every schedule.
- :mod:`.class_prior` — the unlabeled pool's running class prior (EM from the teacher's posteriors) and the
  prior-aware re-weighting of the teacher's class probabilities.
- :mod:`.self_adaptive` — FreeMatch's self-adaptive global and class-wise thresholds (EMAs of the weak predictions).
"""
from Code.methods.thresholds.class_prior import PoolPrior, adjust_to_prior, em_prior
from Code.methods.thresholds.self_adaptive import SelfAdaptiveThreshold
from Code.methods.thresholds.dual_threshold import COMBINE_MODES, dual_threshold_mask, entropy_threshold, sigmoid_rampup

__all__ = ["COMBINE_MODES", "PoolPrior", "adjust_to_prior", "dual_threshold_mask", "em_prior", "entropy_threshold",
           "SelfAdaptiveThreshold",
           "sigmoid_rampup"]
