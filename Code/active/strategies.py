"""Scores of unlabeled images and the selection strategies of ``suggest.py`` (README "Which images to label next").

Per image, from the model's softmax outputs at its input size S (``seg`` 2×S×S, ``cls`` K) — all in [0, 1]:

- ``pixel_entropy`` = mean over all S² pixels of H(seg[:, x]) (normalised entropy, ``inference/uncertainty.py``):
  how unsure the lesion map is, boundary and faint lesions included; defined even when no lesion is predicted;
- ``class_entropy`` = H(cls), how unsure the benign/malignant call is;
- ``disagreement`` = 1 − Σ_x c(x)·p(x) / Σ_x c(x): the share of the classifier's evidence that lies outside the
  segmented lesion, with c the classifier's class-activation map of its predicted class (ReLU, max-normalised,
  resized to S×S) and p the lesion probability. 0: the classifier looks only where the segmentation sees a lesion;
  1: it looks only elsewhere (or the segmentation sees no lesion at all); an all-zero CAM counts as uniform.
  Hermes' two heads share an encoder and are trained to agree (IAS attention, saliency, inter-task
  consistency), so where they still disagree the image is one the model has not understood. A single-task
  network cannot measure this; the classifier has no "lesion present" output (every image holds a lesion),
  which is why the disagreement is spatial, not a presence test.
  A uniform CAM gives 1 − (lesion area share), so images with small predicted lesions score higher at equal
  attention: read the score next to ``lesion_area``.

Strategies (each returns the indices of the k chosen images, best first, and each image's ``score``):

- ``random``: score u_i ~ U(0, 1) from ``seed``; the k largest (a seeded uniform draw, the baseline);
- ``entropy``: score = pixel_entropy + class_entropy (in [0, 2]); the k largest;
- ``disagreement``: score = disagreement; the k largest;
- ``diverse``: score = the entropy score; the m·k most uncertain images (m = ``diverse_factor``, capped at the
  pool) are clustered into k clusters by k-means (``seed``) on their L2-normalised pooled encoder features (global
  average of the deepest encoder stage), and the most uncertain image of each cluster is chosen, so that the k
  are not near-copies of one another (two copies of one image share a cluster). Ties: the earlier image.
"""
from __future__ import annotations

from typing import Dict, List, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from Code.inference.uncertainty import normalized_entropy

STRATEGIES = ("random", "entropy", "disagreement", "diverse")
PARTS = ("pixel_entropy", "class_entropy", "disagreement", "prob_malignant", "lesion_area")
DEFAULT_DIVERSE_FACTOR = 3


def outside_share(cam: torch.Tensor, lesion: torch.Tensor) -> torch.Tensor:
    """1 − Σ c·p / Σ c per image, for ``cam`` and ``lesion`` B×S×S in [0, 1]. An all-zero CAM (no evidence
    anywhere) counts as uniform attention: 1 − mean(p)."""
    cam = torch.where(cam.sum(dim=(1, 2), keepdim=True) > 0, cam, torch.ones_like(cam))
    return (1.0 - (cam * lesion).sum(dim=(1, 2)) / cam.sum(dim=(1, 2))).clamp(0.0, 1.0)


def batch_parts(seg: torch.Tensor, cls: torch.Tensor, cam: torch.Tensor) -> Dict[str, torch.Tensor]:
    """The score parts (module docstring) of a batch: ``seg`` B×2×S×S and ``cls`` B×K softmax, ``cam`` B×1×h×w
    in [0, 1]. Returns length-B float tensors keyed by :data:`PARTS` (``lesion_area``: share of pixels with
    lesion probability > 0.5)."""
    seg, cls = seg.float(), cls.float()
    lesion = seg[:, 1]
    cam = F.interpolate(cam.float(), size=lesion.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    return {"pixel_entropy": normalized_entropy(seg, dim=1).mean(dim=(1, 2)),
            "class_entropy": normalized_entropy(cls, dim=1),
            "disagreement": outside_share(cam.clamp(0.0, 1.0), lesion),
            "prob_malignant": cls[:, 1],
            "lesion_area": (lesion > 0.5).float().mean(dim=(1, 2))}


def strategy_scores(strategy: str, parts: Dict[str, np.ndarray], seed: int) -> np.ndarray:
    """Each image's score under ``strategy`` (module docstring); ``parts`` holds length-n arrays."""
    n = len(parts["pixel_entropy"])
    if strategy == "random":
        return np.random.default_rng(seed).random(n)
    if strategy in ("entropy", "diverse"):
        return np.asarray(parts["pixel_entropy"], np.float64) + np.asarray(parts["class_entropy"], np.float64)
    if strategy == "disagreement":
        return np.asarray(parts["disagreement"], np.float64)
    raise ValueError(f"unknown strategy {strategy!r} (one of {', '.join(STRATEGIES)})")


def top_k(scores: np.ndarray, k: int) -> List[int]:
    """Indices of the k largest scores, largest first; ties keep the earlier index."""
    return [int(i) for i in np.argsort(-np.asarray(scores, np.float64), kind="stable")[:k]]


def diverse_pick(scores: np.ndarray, features: np.ndarray, k: int, seed: int,
                 factor: int = DEFAULT_DIVERSE_FACTOR) -> Tuple[List[int], Dict[int, int]]:
    """``(chosen indices best first, {index: cluster})``: k-means with k clusters on the L2-normalised ``features``
    (n×D) of the min(n, factor·k) highest-scoring images, then the highest-scoring image of each cluster."""
    from sklearn.cluster import KMeans

    candidates = top_k(scores, min(len(scores), max(k, factor * k)))
    if len(candidates) <= k:
        return candidates, {i: c for c, i in enumerate(candidates)}
    x = np.asarray(features, np.float64)[candidates]
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    labels = KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(x)
    best: Dict[int, int] = {}
    for index, cluster in zip(candidates, labels):  # candidates are in score order: the first seen is the best
        best.setdefault(int(cluster), index)
    chosen = sorted(best.values(), key=lambda i: (-scores[i], i))
    return chosen, {i: c for c, i in best.items()}


def select(strategy: str, parts: Dict[str, np.ndarray], features: np.ndarray, k: int, seed: int,
           factor: int = DEFAULT_DIVERSE_FACTOR) -> Tuple[List[int], np.ndarray, Dict[int, int]]:
    """``(chosen indices best first, scores, clusters)`` of ``strategy`` for k images (clusters: ``diverse`` only;
    k-means may return fewer than k distinct clusters on identical features, then the next best fill up)."""
    scores = strategy_scores(strategy, parts, seed)
    if strategy != "diverse":
        return top_k(scores, k), scores, {}
    chosen, clusters = diverse_pick(scores, features, k, seed, factor)
    rest = [i for i in top_k(scores, len(scores)) if i not in set(chosen)]
    return chosen + rest[:k - len(chosen)], scores, clusters

