"""Pixel-level supervised contrastive loss with hard/easy anchor sampling, vectorised
(docs/design.md, "The training step", step 5).

Inputs: ``embed`` B×D×h×w (unit vectors over D), ``labels`` and ``predict`` B×H×W (long; labels −1 = ignore),
both resized (nearest) to h×w. A pixel is *hard* when label ≠ predict, *easy* otherwise.

    pairs   = {(b, c) : #valid pixels of class c in image b ≥ min_pixels}
    n_view  = min(max_samples // |pairs|, max_views)
    per pair: n_hard = min(#hard, max(n_view // 2, n_view − #easy)),  n_easy = min(#easy, n_view − n_hard)
              (half hard, half easy; the short kind is filled from the other; all pixels if fewer than n_view)
    L       = SupCon over the sampled anchors (labels = their class), plus bank keys (never anchors)

Sampling draws one uniform random key per pixel (``torch.rand`` with the ``generator`` passed to ``forward``, which
must live on the labels' device, or else the global torch RNG — the trainer seeds torch) and sorts the pixels by
(group, key), group = (image, class, hard); the first n_hard / n_easy of each group are taken. No Python loop over
images, classes or pixels; one host sync (selecting the sampled pixels, whose number is data-dependent).
"""
from __future__ import annotations

from typing import Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from Code.errors import UserError
from Code.losses.contrastive import supcon_levels, weighted_supcon
from Code.losses.memory_bank import MemoryBank

BankLike = Union[MemoryBank, Tuple[torch.Tensor, torch.Tensor], None]


def _resize_labels(labels: torch.Tensor, size) -> torch.Tensor:
    """Nearest-neighbour resize of a B×H×W label map to B×h×w (long)."""
    if tuple(labels.shape[-2:]) == tuple(size):
        return labels.long()
    return F.interpolate(labels.unsqueeze(1).float(), size=size, mode="nearest").squeeze(1).long()


def sample_pixel_anchors(labels, predict, num_classes, max_samples, max_views, min_pixels, generator=None):
    """Flat pixel indices (into B·h·w) and class labels of the sampled anchors.

    labels, predict: B×h×w long (labels outside [0, num_classes) are ignored). Returns (index A, labels A).
    """
    batch, num_pixels = labels.shape[0], labels[0].numel()
    labels, predict = labels.reshape(batch, num_pixels), predict.reshape(batch, num_pixels)
    valid = (labels >= 0) & (labels < num_classes)
    hard = valid & (predict != labels)
    image = torch.arange(batch, device=labels.device).unsqueeze(1)
    num_groups = batch * num_classes * 2
    group = torch.where(valid, (image * num_classes + labels) * 2 + hard.long(), num_groups).reshape(-1)
    counts = torch.zeros(num_groups + 1, dtype=torch.long, device=labels.device).scatter_add_(
        0, group, torch.ones_like(group))
    num_easy, num_hard = counts[0:num_groups:2], counts[1:num_groups:2]  # per (image, class) pair
    qualifies = (num_easy + num_hard) >= max(int(min_pixels), 1)
    n_view = (max_samples // qualifies.sum().clamp_min(1)).clamp_max(max_views)
    take_hard = torch.minimum(num_hard, torch.maximum(n_view // 2, n_view - num_easy)) * qualifies
    take_easy = torch.minimum(num_easy, n_view - take_hard) * qualifies
    take = torch.cat([torch.stack([take_easy, take_hard], dim=1).reshape(-1), counts.new_zeros(1)])
    random_key = torch.rand(group.numel(), generator=generator, device=labels.device, dtype=torch.float64)
    order = torch.argsort(group.double() + random_key)  # grouped, random order inside each group
    sorted_group = group[order]
    group_start = torch.cumsum(counts, 0) - counts
    rank = torch.arange(group.numel(), device=labels.device) - group_start[sorted_group]
    index = order[rank < take[sorted_group]]  # the one host sync
    return index, labels.reshape(-1)[index]


class PixelContrastLoss(nn.Module):
    """Supervised pixel contrast over sampled hard/easy anchors (module docstring has the equations).

    ``forward(embed, labels, predict, bank=None, generator=None)``; ``bank`` is a :class:`MemoryBank` or a
    (features M×D, labels M) pair. After each call ``last_anchors`` holds the sampled (features A×D detached,
    labels A) for the trainer to enqueue into the pixel bank, and ``last_levels`` the loss's ``(floor, chance)``
    (:func:`Code.losses.contrastive.supcon_levels`).
    """

    def __init__(self, temperature: float = 0.07, max_samples: int = 1024, max_views: int = 100,
                 ignore_index: int = -1, min_pixels: int = 10, num_classes: int = 2, base_temperature=None):
        super().__init__()
        for name, value in (("max_samples", max_samples), ("max_views", max_views), ("num_classes", num_classes)):
            if not isinstance(value, int) or value < 1:
                raise UserError(f"PixelContrastLoss: {name} must be a positive integer, got {value!r}")
        if temperature <= 0 or not isinstance(min_pixels, int) or min_pixels < 0:
            raise UserError(f"PixelContrastLoss: need temperature > 0 and integer min_pixels >= 0, got "
                            f"temperature={temperature}, min_pixels={min_pixels!r}")
        self.temperature = float(temperature)
        self.base_temperature = float(base_temperature or temperature)
        self.max_samples, self.max_views, self.min_pixels = max_samples, max_views, min_pixels
        self.ignore_index, self.num_classes = ignore_index, num_classes
        self.last_anchors: Optional[Tuple[torch.Tensor, torch.Tensor]] = None
        self.last_levels: Optional[torch.Tensor] = None

    def sample(self, embed, labels, predict, generator=None) -> Tuple[torch.Tensor, torch.Tensor]:
        """Sampled anchor features A×D (with gradient) and their labels A."""
        if embed.dim() != 4 or labels.dim() != 3 or predict.shape != labels.shape or labels.shape[0] != embed.shape[0]:
            raise UserError(f"PixelContrastLoss expects embed B×D×h×w and labels/predict B×H×W, got "
                            f"{tuple(embed.shape)}, {tuple(labels.shape)}, {tuple(predict.shape)}")
        size = embed.shape[-2:]
        labels = _resize_labels(labels, size)
        labels = labels.masked_fill(labels == self.ignore_index, -1)
        predict = _resize_labels(predict, size)
        index, anchor_labels = sample_pixel_anchors(labels, predict, self.num_classes, self.max_samples,
                                                    self.max_views, self.min_pixels, generator)
        num_pixels = size[0] * size[1]
        feats = embed.flatten(2)[index // num_pixels, :, index % num_pixels]  # A×D
        return feats, anchor_labels

    def forward(self, embed, labels, predict, bank: BankLike = None, generator=None) -> torch.Tensor:
        feats, anchor_labels = self.sample(embed, labels, predict, generator)
        self.last_anchors = (feats.detach(), anchor_labels)
        bank_feats = bank_labels = None
        if isinstance(bank, MemoryBank):
            bank_feats, bank_labels = bank.features(padded=True)
        elif bank is not None:
            bank_feats, bank_labels = bank
        self.last_levels = supcon_levels(anchor_labels, None, bank_labels, self.num_classes, self.temperature,
                                         self.base_temperature)
        return weighted_supcon(feats, anchor_labels, None, bank_feats, bank_labels,
                               self.temperature, self.base_temperature, self.num_classes)
