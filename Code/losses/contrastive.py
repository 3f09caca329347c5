"""Supervised contrastive loss (Khosla et al. 2020, "all" anchors) with anchor weights and memory-bank keys.

For anchors a_i (unit vectors, rows of the N·V views) with labels y_i and keys k_j = all anchors ∪ bank entries:

    s_ij = a_i·k_j / T                        self-pair (j = i) excluded; bank entries with label −1 excluded
    P(i) = {j ≠ i : y_j = y_i}                positives of anchor i (other views, other samples, bank entries)
    ℓ_i  = −(T / T_base) · (1/|P(i)|) · Σ_{j∈P(i)} [ s_ij − log Σ_{j'≠i} exp(s_ij') ]
    L    = Σ_i w_i·ℓ_i / Σ_i w_i              over anchors with w_i > 0 and |P(i)| ≥ 1

Bank entries are contrast samples only, never anchors. When no anchor qualifies, L is a finite 0 that is still
connected to the graph (its gradient is zero). No host synchronisation when ``num_classes`` is given.

**Where L can lie** (:func:`supcon_levels`, logged beside each contrastive loss). With K(i) the keys of anchor i
(every other anchor and every filled bank slot):

    chance_i = (T / T_base) · log |K(i)|      all similarities equal (an embedding that has learned nothing)
    floor_i  = (T / T_base) · log |P(i)|      a lower bound: by Jensen, log Σ_{j≠i} exp(s_ij) ≥ log |P(i)| +
                                              mean_{j∈P(i)} s_ij, approached when positives coincide with the
                                              anchor and negatives are far (T → 0)

weighted like L. With two classes and full banks |P(i)| ≈ |K(i)| / 2, so the whole range from chance to the floor is
only about (T / T_base)·log 2: a loss of 5.5 with 512 keys is near the floor (log 256 ≈ 5.55), not "at chance"
(log 512 ≈ 6.24). The floor rises as the banks fill, so a rising loss can be a filling bank, not forgetting.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from Code.errors import UserError

_MASKED_LOGIT = -1e9  # finite "minus infinity": a fully masked row stays finite (no NaN in forward or backward)


class _LogSumExpOverKeys(torch.autograd.Function):
    """lse_i = log Σ_{j≠i} exp(s_ij + bias_j), s = A·Kᵀ/T, keys K = [A; bank]: A×D (+ M×D) → A.

    Hand-written backward: with W = softmax(s + bias)·g/T (the softmax is kept from the forward, computed in
    place), ∂/∂A = (W_AA + W_AAᵀ)·A + W_AB·bank; fewer A×K passes than autograd's logsumexp. The bank gets no
    gradient.
    """

    @staticmethod
    def forward(ctx, anchors, bank, bank_bias, temperature):
        num_anchors = anchors.shape[0]
        keys = anchors if bank is None else torch.cat([anchors, bank])
        logits = (anchors / temperature) @ keys.T  # A×K
        if bank is not None:
            logits[:, num_anchors:] += bank_bias
        logits[:, :num_anchors].diagonal().fill_(_MASKED_LOGIT)
        row_max = logits.amax(dim=1, keepdim=True)
        softmax = logits.sub_(row_max).exp_()
        total = softmax.sum(dim=1, keepdim=True)
        softmax.div_(total)
        ctx.save_for_backward(anchors, anchors.new_empty(0, anchors.shape[1]) if bank is None else bank, softmax)
        ctx.temperature = temperature
        return (row_max + total.log()).squeeze(1)

    @staticmethod
    def backward(ctx, grad_lse):
        anchors, bank, softmax = ctx.saved_tensors
        num_anchors = anchors.shape[0]
        weights = softmax * (grad_lse / ctx.temperature).unsqueeze(1)
        anchor_weights = weights[:, :num_anchors]
        grad = torch.addmm(anchor_weights.T @ anchors, anchor_weights, anchors)  # cheaper than adding Wᵀ first
        if bank.shape[0] > 0:
            grad = grad.addmm_(weights[:, num_anchors:], bank)
        return grad, None, None, None


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
    anchor (no anchor, no positive; still a negative). ``num_classes=None`` takes max label + 1 (one host sync).
    Σ_{j∈P(i)} s_ij is computed as a_i·(Σ_{y_j = y_i} k_j)/T − a_i·a_i/T from per-class key sums (A×C×D work
    instead of more A×K passes). Computed in float32 (half-precision inputs too, autocast switched off).
    """
    if anchors.dtype in (torch.float16, torch.bfloat16):
        anchors = anchors.float()
    if anchors.shape[0] == 0:
        return anchors.sum() * 0.0
    with torch.autocast(anchors.device.type, enabled=False):  # autocast would run the products in half precision
        return _weighted_supcon(anchors, anchor_labels.reshape(-1).long(), anchor_weights, bank_features,
                                bank_labels, temperature, base_temperature, num_classes)


def supcon_levels(anchor_labels: torch.Tensor, anchor_weights: Optional[torch.Tensor], bank_labels: Optional[torch.Tensor],
                  num_classes: int, temperature: float, base_temperature: float) -> torch.Tensor:
    """``(floor, chance)`` of :func:`weighted_supcon` for these anchors and keys (module docstring), a 2-vector
    weighted over the anchors exactly as L is (w_i · [|P(i)| ≥ 1]); zeros when no anchor qualifies. Labels as in
    :func:`weighted_supcon` (out of [0, num_classes): no anchor / empty bank slot). No host synchronisation."""
    labels = anchor_labels.reshape(-1).long()
    classes = torch.arange(num_classes, device=labels.device)
    onehot = labels.unsqueeze(1) == classes  # A×C
    counts = onehot.sum(0).float()
    num_keys = torch.full((), float(labels.numel() - 1), device=labels.device)
    if bank_labels is not None and bank_labels.numel() > 0:
        bank_onehot = bank_labels.reshape(-1).long().to(labels.device).unsqueeze(1) == classes
        counts = counts + bank_onehot.sum(0).float()
        num_keys = num_keys + bank_onehot.any(1).sum().float()
    valid = onehot.any(1)
    num_positive = (counts[torch.where(valid, labels, 0)] - 1.0) * valid
    weights = (num_positive > 0).float()
    if anchor_weights is not None:
        weights = weights * anchor_weights.reshape(-1).float().to(weights.device)
    scale = temperature / base_temperature
    floor = scale * torch.log(num_positive.clamp_min(1.0))
    chance = scale * torch.log(num_keys.clamp_min(1.0)).expand_as(floor)
    total = weights.sum().clamp_min(1e-12)
    return torch.stack([(weights * floor).sum() / total, (weights * chance).sum() / total])


def _weighted_supcon(anchors, anchor_labels, anchor_weights, bank_features, bank_labels, temperature,
                     base_temperature, num_classes):
    """weighted_supcon for float anchors (A ≥ 1) and long labels, autocast off."""
    has_bank = bank_features is not None and bank_features.shape[0] > 0
    bank = bank_labels_ = None
    if has_bank:
        bank = bank_features.detach().to(anchors.device, anchors.dtype)
        bank_labels_ = bank_labels.reshape(-1).to(anchors.device, torch.long)
    if num_classes is None:
        num_classes = int(anchor_labels.max() if bank is None else torch.cat([anchor_labels, bank_labels_]).max()) + 1
    classes = torch.arange(num_classes, device=anchors.device)
    anchor_onehot = (anchor_labels.unsqueeze(1) == classes).to(anchors.dtype)  # A×C, zero rows if invalid
    class_key_sums, class_counts = anchor_onehot.T @ anchors, anchor_onehot.sum(0)  # C×D, C
    bank_bias = None
    if has_bank:
        bank_onehot = (bank_labels_.unsqueeze(1) == classes).to(anchors.dtype)
        class_key_sums = class_key_sums + bank_onehot.T @ bank
        class_counts = class_counts + bank_onehot.sum(0)
        bank_bias = torch.where(bank_onehot.sum(1) > 0, 0.0, _MASKED_LOGIT).to(anchors.dtype)
    log_denominator = _LogSumExpOverKeys.apply(anchors, bank, bank_bias, temperature)
    anchor_valid = anchor_onehot.sum(1) > 0
    anchor_class = torch.where(anchor_valid, anchor_labels, 0)
    num_positive = (class_counts[anchor_class] - 1.0) * anchor_valid
    anchor_dot_class_sums = ((anchors @ class_key_sums.T) * anchor_onehot).sum(dim=1)  # a_i·S_{y_i}, no gather
    sum_logit_pos = (anchor_dot_class_sums - (anchors * anchors).sum(dim=1)) / temperature
    mean_log_prob_pos = sum_logit_pos / num_positive.clamp_min(1.0) - log_denominator
    loss_per_anchor = -(temperature / base_temperature) * mean_log_prob_pos
    weights = (num_positive > 0).to(anchors.dtype)
    if anchor_weights is not None:
        weights = weights * anchor_weights.reshape(-1).to(anchors.dtype)
    return (weights * loss_per_anchor).sum() / weights.sum().clamp_min(1e-12)


class SupConLoss(nn.Module):
    """Image-level supervised contrastive loss; see the module docstring for the equation.

    ``forward(features, labels, weights=None, bank_features=None, bank_labels=None)``:
        features: N×V×D unit vectors (V views of each sample, e.g. weak and strong); labels: N (long);
        weights: N (per-sample anchor weight, e.g. the dual-threshold keep mask; 0 drops the sample's anchors,
        its views remain contrast samples); bank_features M×D, bank_labels M (extra keys, never anchors;
        label −1 = empty slot, as ``MemoryBank.features(padded=True)`` gives).
    ``num_classes`` (optional) saves the one host sync that finding the number of classes otherwise costs.
    Returns a 0-dim float32 tensor. After each call ``last_levels`` holds its ``(floor, chance)``
    (:func:`supcon_levels`, detached).
    """

    def __init__(self, temperature: float = 0.07, base_temperature: float = 0.07, num_classes: Optional[int] = None):
        super().__init__()
        if temperature <= 0 or base_temperature <= 0:
            raise UserError(f"SupConLoss: temperature and base_temperature must be > 0, got {temperature}, "
                            f"{base_temperature}")
        self.temperature = float(temperature)
        self.base_temperature = float(base_temperature)
        self.num_classes = num_classes
        self.last_levels: Optional[torch.Tensor] = None

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
        num_classes = self.num_classes
        if num_classes is None:  # one host sync, as weighted_supcon's
            num_classes = int(anchor_labels.max() if bank_labels is None else
                              torch.cat([anchor_labels, bank_labels.reshape(-1).to(anchor_labels)]).max()) + 1
        self.last_levels = supcon_levels(anchor_labels, anchor_weights, bank_labels, max(num_classes, 1),
                                         self.temperature, self.base_temperature)
        return weighted_supcon(anchors, anchor_labels, anchor_weights, bank_features, bank_labels,
                               self.temperature, self.base_temperature, self.num_classes)
