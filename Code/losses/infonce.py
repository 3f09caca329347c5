"""InfoNCE with a queue of negative keys: the MoCo v2 objective (He et al. 2020; Chen et al. 2020).

For N queries q_i and their positive keys k_i (unit vectors, N×D) and a queue of K negative keys Q (unit vectors,
K×D), with temperature T:

    l_pos_i   = q_i·k_i / T                                   (N,)
    l_neg_ij  = q_i·Q_j / T                                   (N, K)
    L         = (1/N) Σ_i −log( exp(l_pos_i) / (exp(l_pos_i) + Σ_j exp(l_neg_ij)) )

i.e. a (K+1)-way cross-entropy whose correct class is 0 (the positive). With ``batch_negatives`` the other images'
keys of the same step are negatives too (j ≠ i: l_ij = q_i·k_j / T): negatives from the very same key encoder, which
a drift of the whole embedding between steps cannot tell apart from the positive (only queue keys, made by older key
encoders, can be "recognised" by their age; see the README). Keys and queue get no gradient (they come
from the momentum encoder). With image ids for the queries and the queue entries, a queue entry of the query's own
image (an older key of it, from an earlier epoch) is no negative: its logit is masked out (set to −10⁹) — on a small
data set a queue covers a large share of the images, and such "negatives" would be positives. Also returned: the
instance-discrimination accuracy (share of queries whose positive logit is the largest), a cheap sign that the task
is neither trivial (≈ 1 at once) nor failing (≈ 1/(K+1)).
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F

from Code.errors import UserError

_MASKED = -1e9


def infonce_logits(query: torch.Tensor, key: torch.Tensor, queue: torch.Tensor, temperature: float,
                   query_ids: Optional[torch.Tensor] = None, queue_ids: Optional[torch.Tensor] = None,
                   batch_negatives: bool = False) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(logits, target)``: logits ``[q·k, q·Q_1 … q·Q_K] / T`` (N, 1 + K) with target 0, or with
    ``batch_negatives`` ``[q·k_1 … q·k_N, q·Q_1 … q·Q_K] / T`` (N, N + K) with target i for query i (the other
    images' keys of the batch are negatives too); ``key`` and ``queue`` are constants; a key or queue entry of
    the query's own image other than its positive is masked (see the module docstring)."""
    if query.dim() != 2 or key.shape != query.shape or queue.dim() != 2 or queue.shape[1] != query.shape[1]:
        raise UserError(f"InfoNCE expects query and key N×D and queue K×D, got {tuple(query.shape)}, "
                        f"{tuple(key.shape)}, {tuple(queue.shape)}")
    if temperature <= 0:
        raise UserError(f"pretrain.temperature must be > 0, got {temperature}")
    key, queue = key.detach(), queue.detach()
    n = query.shape[0]
    if batch_negatives:
        logits = query @ torch.cat([key, queue]).T / temperature
        target = torch.arange(n, device=query.device)
        if query_ids is not None and queue_ids is not None:
            same = query_ids.reshape(-1, 1) == torch.cat([query_ids, queue_ids]).reshape(1, -1)
            same[target, target] = False
            logits = logits.masked_fill(same, _MASKED)
        return logits, target
    positive = (query * key).sum(dim=1, keepdim=True)
    logits = torch.cat([positive, query @ queue.T], dim=1) / temperature
    if query_ids is not None and queue_ids is not None:
        same = query_ids.reshape(-1, 1) == queue_ids.reshape(1, -1)
        logits = torch.cat([logits[:, :1], logits[:, 1:].masked_fill(same, _MASKED)], dim=1)
    return logits, torch.zeros(n, dtype=torch.long, device=query.device)


def infonce_loss(query: torch.Tensor, key: torch.Tensor, queue: torch.Tensor, temperature: float,
                 query_ids: Optional[torch.Tensor] = None, queue_ids: Optional[torch.Tensor] = None,
                 batch_negatives: bool = False) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(loss, instance accuracy)`` as in the module docstring; both 0-dim tensors on the query's device."""
    logits, target = infonce_logits(query, key, queue, temperature, query_ids, queue_ids, batch_negatives)
    loss = F.cross_entropy(logits.float(), target)
    accuracy = (logits.detach().argmax(dim=1) == target).float().mean()
    return loss, accuracy
