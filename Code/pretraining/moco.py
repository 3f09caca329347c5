"""MoCo v2 pieces: a projection branch over the smp encoder, the momentum (key) copy, the queue of keys.

    view x (B×C×S×S) ──► encoder ──► f5 (B×C5×S/32×S/32) ──► GAP ──► h (B×C5) ──► MLP ──► z (B×D), ‖z‖ = 1
    MLP = Linear(C5, hidden) → BatchNorm → ReLU → Linear(hidden, D)

The head's batch norm (as in SimCLR, BYOL and MoCo v3; MoCo v2's head has none) centres the hidden features: the
pooled features of a young CNN share a large positive mean (ReLU outputs), which without it puts every embedding
in one narrow cone where the InfoNCE logits barely differ (measured: embedding std 0.3 → 0.01 within 100 steps).

The query branch is trained; the key branch is an exponential moving average of it,
θ_k ← m·θ_k + (1 − m)·θ_q after every step, and is never back-propagated. Keys enter a FIFO queue (K×D) that
provides the negatives of the next steps.

Batch-norm leak (MoCo's "shuffling BN"): a query and its own key computed with the same batch statistics can
recognise each other by those statistics instead of by content. With ``bn_splits = s`` both branches run their
batch as s chunks (each chunk normalised by its own statistics), and the key batch is randomly permuted first, so
that a query and its key are normalised over different sets of images; on one device this is MoCo's multi-GPU
shuffle. Only the encoder is exported (``encoder.state_dict()``); the heads are discarded after pre-training.
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from Code.errors import UserError
from Code.models.encoders import build_encoder


class ProjectionBranch(nn.Module):
    """smp encoder + MLP head; ``forward(x)`` → unit vectors B×D, ``features(x)`` → pooled encoder features."""

    def __init__(self, encoder_name: str, in_channels: int, hidden: int, dim: int, bn_splits: int = 1):
        super().__init__()
        self.encoder = build_encoder(encoder_name, in_channels, None)
        channels = self.encoder.out_channels[-1]
        self.head = nn.Sequential(nn.Linear(channels, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
                                  nn.Linear(hidden, dim))
        self.bn_splits = int(bn_splits)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Global average pool of the deepest encoder feature: B×C5."""
        return self.encoder(x)[-1].mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] % self.bn_splits or x.shape[0] // self.bn_splits < 2:
            raise UserError(f"pretrain.batch ({x.shape[0]} per process) must be a multiple of pretrain.bn_splits "
                            f"({self.bn_splits}) with at least 2 images per split")
        z = torch.cat([self.head(self.features(chunk)) for chunk in x.chunk(self.bn_splits)])
        return F.normalize(z, dim=1)


def make_key_branch(query: ProjectionBranch) -> ProjectionBranch:
    """A frozen copy of the query branch (same weights at step 0)."""
    key = copy.deepcopy(query)
    for param in key.parameters():
        param.requires_grad_(False)
    return key


@torch.no_grad()
def momentum_update(query: nn.Module, key: nn.Module, momentum: float) -> None:
    """θ_k ← m·θ_k + (1 − m)·θ_q for every parameter (batch-norm statistics stay the key branch's own)."""
    for p_k, p_q in zip(key.parameters(), query.parameters()):
        p_k.mul_(momentum).add_(p_q.detach(), alpha=1.0 - momentum)


@torch.no_grad()
def encode_keys(key: ProjectionBranch, x: torch.Tensor) -> torch.Tensor:
    """Keys of ``x`` in its own order, computed on a random permutation of the batch (see module docstring);
    the permutation draws from the global torch RNG, which checkpoints save."""
    perm = torch.randperm(x.shape[0]).to(x.device)
    keys = key(x[perm])
    return keys[torch.argsort(perm)]


class KeyQueue(nn.Module):
    """FIFO queue of K unit keys (K×D, starts as random unit vectors drawn from ``seed``, as in MoCo) and the ids
    of their images (K, −1 for the random start), so that a query's own older keys can be excluded from its
    negatives."""

    def __init__(self, size: int, dim: int, seed: int = 0):
        super().__init__()
        start = torch.randn(size, dim, generator=torch.Generator().manual_seed(seed))  # the same on every rank
        self.register_buffer("keys", F.normalize(start, dim=1))
        self.register_buffer("ids", torch.full((size,), -1, dtype=torch.long))
        self.register_buffer("pointer", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def push(self, keys: torch.Tensor, ids: torch.Tensor) -> None:
        """Overwrite the oldest ``len(keys)`` entries (wrapping around)."""
        size = self.keys.shape[0]
        if keys.shape[0] > size:
            raise UserError(f"pretrain.queue_size ({size}) must be at least the keys of one step ({keys.shape[0]})")
        index = (self.pointer + torch.arange(keys.shape[0], device=keys.device)) % size
        self.keys[index] = keys.to(self.keys.dtype)
        self.ids[index] = ids.to(self.ids.device)
        self.pointer.copy_((self.pointer + keys.shape[0]) % size)


def embedding_std(z: torch.Tensor) -> torch.Tensor:
    """Collapse monitor: √D · mean over dimensions of the batch std of unit vectors z (B×D). About 1 for
    embeddings spread over the sphere, 0 when every image maps to one point (SimSiam's diagnostic)."""
    z = z.detach().float()
    return z.std(dim=0).mean() * z.shape[1] ** 0.5
