"""Paired statistics of a method against its baseline over the same test images: bootstrap intervals and McNemar.

Input: a :class:`PairedSet` — per seed s (rows) and test image i (columns) the method's and the baseline's
per-image results on the **same** images in the same order, shapes ``(S, n)``, with the true class ``label`` (n,).

**Interval.** For metric m the statistic is the mean over seeds of the paired difference on a set of images I,

    Δ(I) = 1/S · Σ_s [ m(method_s, I) − m(baseline_s, I) ],

with m = Dice (mean per-image lesion Dice), accuracy, balanced accuracy ((sensitivity + specificity) / 2),
sensitivity or specificity (the share of malignant or benign images called right; used for the predictions at an
operating threshold chosen on val, Code/reporting/operating_point.py) or AUC
(Mann–Whitney: (R₁ − n₁(n₁+1)/2) / (n₁ n₀), R₁ the rank sum of the malignant images' ``prob_malignant`` with
mid-ranks for ties, equal to the ROC AUC). One resample draws image indices **once** and uses them for every
seed and for both rows (the pairing). ``scipy.stats.bootstrap`` does the resampling (vectorised: one call
evaluates a whole batch of resamples); the images are resampled **within each true class** (one index sample per
class, resampled independently), because the split draws its test part per class, so the class counts of the
test set are fixed by design: every resample keeps them, and AUC and balanced accuracy are defined in every
resample (never a one-class resample to skip). A class with fewer than two test images makes the resampling
unstratified (and a resample without one class gives NaN, so that metric's interval is NaN: "n/a").

The interval is the **percentile** interval (2.5 and 97.5 % quantiles of the bootstrap distribution), not BCa:
BCa is undefined for a degenerate distribution (every resample the same value, e.g. identical predictions, or a
constant Dice shift), which are exactly the cases a paired comparison must answer with [0, 0] or [δ, δ]; for a
mean-like statistic on ~200 images the two agree closely.

**McNemar** (exact, two-sided), per seed on accuracy: b = images the method classifies right and the baseline
wrong, c = the reverse, p = ``scipy.stats.binomtest(b, b + c, 0.5).pvalue`` (1 when b + c = 0).
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Callable, Dict, List, Tuple

import numpy as np
from scipy.stats import DegenerateDataWarning, binomtest, bootstrap, rankdata

CI_METRICS: Tuple[str, ...] = ("dice", "accuracy", "balanced_accuracy", "auc")
CONFIDENCE = 0.95
MIN_RESAMPLES = 2000


@dataclass
class PairedSet:
    """Per-image results of S paired seeds on n common test images (same order in every array).

    ``label``: (n,) true class; the others (S, n): ``dice_*`` per-image lesion Dice, ``prob_*`` malignancy
    probability, ``pred_*`` predicted class, for the method (``_m``) and the baseline (``_b``)."""
    label: np.ndarray
    dice_m: np.ndarray
    dice_b: np.ndarray
    prob_m: np.ndarray
    prob_b: np.ndarray
    pred_m: np.ndarray
    pred_b: np.ndarray

    @property
    def n_seeds(self) -> int:
        return int(self.dice_m.shape[0])

    @property
    def n_images(self) -> int:
        return int(self.label.shape[0])


@dataclass
class Interval:
    """Δ (the statistic on all test images) and its bootstrap interval [low, high], as fractions (not %)."""
    delta: float
    low: float
    high: float

    @property
    def words(self) -> str:
        """"ahead" / "behind" only where the interval excludes 0; "within noise" otherwise; "n/a" if undefined."""
        if any(math.isnan(v) for v in (self.low, self.high)):
            return "n/a"
        return "ahead" if self.low > 0 else "behind" if self.high < 0 else "within noise"

    @property
    def excludes_zero(self) -> bool:
        return self.words in ("ahead", "behind")

    def cell(self) -> str:
        """``+1.23 [+0.40, +2.05] ahead`` in percentage points; the numbers bold only if the interval excludes 0."""
        if math.isnan(self.delta):
            return "n/a"
        numbers = f"{100 * self.delta:+.2f} [{100 * self.low:+.2f}, {100 * self.high:+.2f}]"
        return f"**{numbers}** {self.words}" if self.excludes_zero else f"{numbers} {self.words}"


def _balanced_accuracy(correct: np.ndarray, label: np.ndarray) -> np.ndarray:
    """(sensitivity + specificity) / 2 along the last axis; NaN where a class is absent."""
    pos = (label == 1)
    n_pos, n_neg = pos.sum(axis=-1), (~pos).sum(axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        sens = (correct * pos).sum(axis=-1) / n_pos
        spec = (correct * ~pos).sum(axis=-1) / n_neg
    return (sens + spec) / 2.0


def rank_auc(prob: np.ndarray, label: np.ndarray) -> np.ndarray:
    """ROC AUC along the last axis by the Mann–Whitney rank sum (mid-ranks for ties); NaN with one class only.
    ``prob``: (..., n); ``label``: broadcastable to it."""
    pos = np.broadcast_to(label == 1, prob.shape)
    ranks = rankdata(prob, axis=-1)
    n1 = pos.sum(axis=-1)
    n0 = prob.shape[-1] - n1
    with np.errstate(divide="ignore", invalid="ignore"):
        return ((ranks * pos).sum(axis=-1) - n1 * (n1 + 1) / 2.0) / (n1 * n0)


def _differences(data: PairedSet, metric: str, idx: np.ndarray) -> np.ndarray:
    """m(method) − m(baseline) per seed on the images ``idx`` ((n,) or (B, n) indices) → (S,) or (S, B)."""
    label = data.label[idx]
    if metric == "dice":
        return data.dice_m[:, idx].mean(axis=-1) - data.dice_b[:, idx].mean(axis=-1)
    if metric == "auc":
        return rank_auc(data.prob_m[:, idx], label) - rank_auc(data.prob_b[:, idx], label)
    right_m = (data.pred_m[:, idx] == label).astype(float)
    right_b = (data.pred_b[:, idx] == label).astype(float)
    if metric == "accuracy":
        return right_m.mean(axis=-1) - right_b.mean(axis=-1)
    if metric == "balanced_accuracy":
        return _balanced_accuracy(right_m, label) - _balanced_accuracy(right_b, label)
    if metric in ("sensitivity", "specificity"):  # the share right among the malignant (benign) images
        cls = (label == (1 if metric == "sensitivity" else 0))
        with np.errstate(divide="ignore", invalid="ignore"):
            return ((right_m * cls).sum(axis=-1) - (right_b * cls).sum(axis=-1)) / cls.sum(axis=-1)
    raise ValueError(f"unknown metric {metric!r}; expected one of {CI_METRICS}")


def _statistic(data: PairedSet, metric: str) -> Callable[..., np.ndarray]:
    """Δ as scipy's vectorised statistic: one index sample per stratum, joined into the resampled image set."""
    def statistic(*strata: np.ndarray, axis: int = -1) -> np.ndarray:
        idx = np.concatenate(strata, axis=-1)
        return _differences(data, metric, idx).mean(axis=0)
    return statistic


def strata(label: np.ndarray) -> List[np.ndarray]:
    """Image indices per true class (the resampling strata); one stratum of all images when a class has < 2."""
    groups = [np.flatnonzero(label == c) for c in np.unique(label)]
    return groups if all(len(g) >= 2 for g in groups) else [np.arange(len(label))]


def paired_interval(data: PairedSet, metric: str, n_resamples: int = MIN_RESAMPLES, seed: int = 0) -> Interval:
    """Δ on all images and its stratified paired bootstrap percentile interval (see the module docstring)."""
    statistic = _statistic(data, metric)
    groups = strata(data.label)
    delta = float(statistic(*groups))
    if data.n_images < 2:
        return Interval(delta, math.nan, math.nan)
    with np.errstate(divide="ignore", invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", DegenerateDataWarning)  # a NaN interval is reported as "n/a"
        res = bootstrap(groups, statistic, n_resamples=n_resamples, batch=500, vectorized=True, paired=False,
                        confidence_level=CONFIDENCE, method="percentile", rng=np.random.default_rng(seed))
    return Interval(delta, float(res.confidence_interval.low), float(res.confidence_interval.high))


def paired_intervals(data: PairedSet, n_resamples: int = MIN_RESAMPLES, seed: int = 0) -> Dict[str, Interval]:
    """:func:`paired_interval` for every metric of :data:`CI_METRICS` (each with the same resampled images)."""
    return {m: paired_interval(data, m, n_resamples, seed) for m in CI_METRICS}


def mcnemar(label: np.ndarray, pred_m: np.ndarray, pred_b: np.ndarray) -> Tuple[int, int, float]:
    """``(b, c, p)`` of McNemar's exact test for one seed: b = method right & baseline wrong, c = the reverse,
    p = two-sided binomial p of b in b + c trials at 1/2 (1.0 when b + c = 0). Arrays: (n,)."""
    right_m, right_b = pred_m == label, pred_b == label
    b, c = int(np.sum(right_m & ~right_b)), int(np.sum(~right_m & right_b))
    p = 1.0 if b + c == 0 else float(binomtest(b, b + c, 0.5).pvalue)
    return b, c, p
