"""Per-class FIFO memory bank of embeddings (image-level or pixel-level contrast).

State (buffers, saved in ``state_dict``): ``queue`` C×S×D, ``ptr`` C (next write slot), ``filled`` C (≤ S).
Enqueuing n_c items of class c writes item number r (0-based, arrival order) to slot (ptr_c + r) mod S, exactly
as n_c sequential single writes would; so when n_c > S only the last S items survive. Then

    ptr_c ← (ptr_c + n_c) mod S,        filled_c ← min(filled_c + n_c, S).

Slots are always filled from 0 upwards, so the filled entries of class c are slots [0, filled_c).
"""
from __future__ import annotations

from typing import Tuple

import torch
import torch.distributed as dist
from torch import nn

from Code.errors import UserError


def _gather_from_all_ranks(feats: torch.Tensor, labels: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Concatenate (feats, labels) of every rank in rank order; identity without an initialised process group.

    Counts may differ between ranks: every rank pads to the largest count (padding rows get label −1, which the
    bank ignores). Finding that largest count is this module's one host synchronisation.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return feats, labels
    world = dist.get_world_size()
    count = torch.tensor([feats.shape[0]], device=feats.device, dtype=torch.long)
    counts = [torch.zeros_like(count) for _ in range(world)]
    dist.all_gather(counts, count)
    max_count = int(torch.stack(counts).max())
    padded_feats = feats.new_zeros(max_count, feats.shape[1])
    padded_feats[: feats.shape[0]] = feats
    padded_labels = labels.new_full((max_count,), -1)
    padded_labels[: labels.shape[0]] = labels
    all_feats = [torch.empty_like(padded_feats) for _ in range(world)]
    all_labels = [torch.empty_like(padded_labels) for _ in range(world)]
    dist.all_gather(all_feats, padded_feats)
    dist.all_gather(all_labels, padded_labels)
    return torch.cat(all_feats), torch.cat(all_labels)


class MemoryBank(nn.Module):
    """FIFO queue of ``size`` embeddings of dimension ``dim`` for each of ``num_classes`` classes."""

    def __init__(self, num_classes: int, size: int, dim: int):
        super().__init__()
        for name, value in (("num_classes", num_classes), ("size", size), ("dim", dim)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise UserError(f"MemoryBank: {name} must be a positive integer, got {value!r}")
        self.num_classes, self.size, self.dim = num_classes, size, dim
        self.register_buffer("queue", torch.zeros(num_classes, size, dim))
        self.register_buffer("ptr", torch.zeros(num_classes, dtype=torch.long))
        self.register_buffer("filled", torch.zeros(num_classes, dtype=torch.long))

    @torch.no_grad()
    def enqueue(self, feats: torch.Tensor, labels: torch.Tensor) -> None:
        """Append ``feats`` N×D with ``labels`` N (labels outside [0, C) are skipped); detached, no host sync
        except the count exchange under ``torch.distributed`` (all ranks must call it together)."""
        if feats.dim() != 2 or feats.shape[1] != self.dim or labels.numel() != feats.shape[0]:
            raise UserError(f"MemoryBank.enqueue expects feats N×{self.dim} and N labels, got "
                            f"{tuple(feats.shape)} and {labels.numel()} labels")
        feats = feats.detach().to(self.queue.device, self.queue.dtype)
        labels = labels.detach().reshape(-1).to(self.queue.device, torch.long)
        feats, labels = _gather_from_all_ranks(feats, labels)
        if feats.shape[0] == 0:
            return
        classes = torch.arange(self.num_classes, device=labels.device)
        valid = (labels >= 0) & (labels < self.num_classes)
        safe_labels = torch.where(valid, labels, 0)
        is_class = (safe_labels.unsqueeze(1) == classes) & valid.unsqueeze(1)  # N×C
        rank_in_class = (is_class.long().cumsum(0) - 1).gather(1, safe_labels.unsqueeze(1)).squeeze(1)
        count_per_class = is_class.long().sum(0)
        slot = (self.ptr[safe_labels] + rank_in_class) % self.size
        item = torch.where(valid, torch.arange(labels.numel(), device=labels.device), -1)
        # The last item written to a slot wins, as with sequential writes: take the largest item index per slot.
        writer = torch.full((self.num_classes * self.size,), -1, dtype=torch.long, device=labels.device)
        writer.scatter_reduce_(0, safe_labels * self.size + slot, item, reduce="amax")
        flat_queue = self.queue.view(-1, self.dim)
        flat_queue.copy_(torch.where((writer >= 0).unsqueeze(1), feats[writer.clamp_min(0)], flat_queue))
        self.ptr.copy_((self.ptr + count_per_class) % self.size)
        self.filled.copy_((self.filled + count_per_class).clamp_max(self.size))

    def features(self, padded: bool = False) -> Tuple[torch.Tensor, torch.Tensor]:
        """Filled entries as (M×D features, M labels), class by class, slot order.

        ``padded=True`` returns all C·S slots with label −1 for empty ones (fixed shape, no host sync; the
        contrastive losses ignore keys with a negative label). ``padded=False`` selects the filled ones (one sync).
        Either way the features are a copy: an ``enqueue`` before the loss's backward must not change them.
        """
        slots = torch.arange(self.size, device=self.queue.device)
        is_filled = slots.unsqueeze(0) < self.filled.unsqueeze(1)  # C×S
        labels = torch.arange(self.num_classes, device=self.queue.device).unsqueeze(1).expand(-1, self.size)
        if padded:
            return self.queue.reshape(-1, self.dim).clone(), torch.where(is_filled, labels, -1).reshape(-1)
        return self.queue[is_filled], labels[is_filled]
