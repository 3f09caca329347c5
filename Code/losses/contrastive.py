"""Supervised contrastive loss (Khosla et al. 2020, "all" anchors) with anchor weights and memory-bank keys.

For anchors a_i (unit vectors, rows of the N·V views) with labels y_i and keys k_j = all anchors ∪ bank entries:

    s_ij = a_i·k_j / T                        self-pair (j = i) excluded; bank entries with label −1 excluded
    P(i) = {j ≠ i : y_j = y_i}                positives of anchor i (other views, other samples, bank entries)
    ℓ_i  = −(T / T_base) · (1/|P(i)|) · Σ_{j∈P(i)} [ s_ij − log Σ_{j'≠i} exp(s_ij') ]
    L    = Σ_i w_i·ℓ_i / Σ_i w_i              over anchors with w_i > 0 and |P(i)| ≥ 1

Bank entries are contrast samples only, never anchors. When no anchor qualifies, L is a finite 0 that is still
connected to the graph (its gradient is zero). No host synchronisation when ``num_classes`` is given.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from Code.errors import UserError

_MASKED_LOGIT = -1e9  # finite "minus infinity": a fully masked row stays finite (no NaN in forward or backward)


def weighted_supcon(
    anchors: torch.Tensor,
    anchor_labels: torch.Tensor,
    anchor_weights: Optional[torch.Tensor] = None,
    bank_features: Optional[torch.Tensor] = None,
    bank_labels: Optional[torch.Tensor] = None,
    temperature: float = 0.07,
    base_temperature: float = 0.07,
    num_classes: Optional[int] = None,
) -> torch.Tensor:
    """L above for anchors A×D (labels A, weights A) and optional bank keys M×D (labels M).

    A bank label outside [0, num_classes) marks an empty slot (not a key); an anchor label outside it drops the
    anchor (no anchor, no positive; still a negative). ``num_classes=None`` takes max label + 1 (one host sync). Σ_{j∈P(i)} s_ij is computed as a_i·(Σ_{y_j = y_i} k_j)/T − a_i·a_i/T from
    per-class key sums (A×C×D work instead of more A×K passes). Computed in float32 (safe under autocast).
    """
    anchors = anchors.float()
    anchor_labels = anchor_labels.reshape(-1).long()
    num_anchors = anchors.shape[0]
    keys, key_labels = anchors, anchor_labels
    has_bank = bank_features is not None and bank_features.shape[0] > 0
    if has_bank:
        keys = torch.cat([anchors, bank_features.detach().to(anchors.device, torch.float32)])
        key_labels = torch.cat([anchor_labels, bank_labels.reshape(-1).to(anchors.device, torch.long)])
    if num_classes is None:
        num_classes = int(key_labels.max()) + 1 if key_labels.numel() else 1
    classes = torch.arange(num_classes, device=anchors.device)
    key_onehot = (key_labels.unsqueeze(1) == classes).float()  # K×C (all zero for invalid labels)
    anchor_valid = (anchor_labels >= 0) & (anchor_labels < num_classes)
    anchor_class = torch.where(anchor_valid, anchor_labels, 0)
    scaled = anchors / temperature
    logits = scaled @ keys.T  # A×K
    if has_bank:
        key_bias = torch.where(key_onehot.sum(1) > 0, 0.0, _MASKED_LOGIT)
        key_bias[:num_anchors] = 0.0
        logits = logits + key_bias  # empty bank slots are no keys
    logits[:, :num_anchors].diagonal().fill_(_MASKED_LOGIT)  # no self-contrast
    num_positive = (key_onehot.sum(0)[anchor_class] - 1.0) * anchor_valid
    class_key_sums = key_onehot.T @ keys  # C×D
    sum_logit_pos = (scaled * (class_key_sums[anchor_class] - anchors)).sum(dim=1)
    mean_log_prob_pos = sum_logit_pos / num_positive.clamp_min(1.0) - torch.logsumexp(logits, dim=1)
    loss_per_anchor = -(temperature / base_temperature) * mean_log_prob_pos
    weights = (num_positive > 0).float()
    if anchor_weights is not None:
        weights = weights * anchor_weights.reshape(-1).float()
    return (weights * loss_per_anchor).sum() / weights.sum().clamp_min(1e-12)


class SupConLoss(nn.Module):
    """Image-level supervised contrastive loss; see the module docstring for the equation.

    ``forward(features, labels, weights=None, bank_features=None, bank_labels=None)``:
        features: N×V×D unit vectors (V views of each sample, e.g. weak and strong); labels: N (long);
        weights: N (per-sample anchor weight, e.g. the dual-threshold keep mask; 0 drops the sample's anchors,
        its views remain contrast samples); bank_features M×D, bank_labels M (extra keys, never anchors;
        label −1 = empty slot, as ``MemoryBank.features(padded=True)`` gives).
    ``num_classes`` (optional) saves the one host sync that finding the number of classes otherwise costs.
    Returns a 0-dim float32 tensor.
    """

    def __init__(self, temperature: float = 0.07, base_temperature: float = 0.07, num_classes: Optional[int] = None):
        super().__init__()
        if temperature <= 0 or base_temperature <= 0:
            raise UserError(f"SupConLoss: temperature and base_temperature must be > 0, got {temperature}, "
                            f"{base_temperature}")
        self.temperature = float(temperature)
        self.base_temperature = float(base_temperature)
        self.num_classes = num_classes

    def forward(self, features, labels, weights=None, bank_features=None, bank_labels=None) -> torch.Tensor:
        if features.dim() != 3:
            raise UserError(f"SupConLoss expects features N×V×D, got shape {tuple(features.shape)}")
        num_samples, num_views, _ = features.shape
        if labels.numel() != num_samples or (weights is not None and weights.numel() != num_samples):
            raise UserError(f"SupConLoss: labels/weights must have N={num_samples} entries")
        if (bank_features is None) != (bank_labels is None):
            raise UserError("SupConLoss: give both bank_features and bank_labels, or neither")
        anchors = features.transpose(0, 1).reshape(num_views * num_samples, -1)  # view-major: [view0; view1; …]
        anchor_labels = labels.reshape(-1).repeat(num_views)
        anchor_weights = None if weights is None else weights.reshape(-1).float().repeat(num_views)
        return weighted_supcon(anchors, anchor_labels, anchor_weights, bank_features, bank_labels,
                               self.temperature, self.base_temperature, self.num_classes)
