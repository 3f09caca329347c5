"""Non-finite loss detection without a host sync per step: the first bad step of each loss term stays on the device
and is read back only when scalars are logged (or before a checkpoint)."""
from __future__ import annotations

from pathlib import Path
from typing import Dict

import torch
import torch.distributed as torch_dist

from Code.errors import UserError

LOSS_TERMS = ("consistency", "total")  # besides every key ending in _sup, _unsup or _contrast


class NonFiniteWatch:
    """``first_bad[key]``: a 0-dim long tensor, the first step at which loss term ``key`` was not finite
    (−1: never)."""

    def __init__(self) -> None:
        self.first_bad: Dict[str, torch.Tensor] = {}

    def track(self, logs: Dict[str, torch.Tensor], step: int) -> None:
        for key, value in logs.items():
            if value.dim() == 0 and (key.endswith(("_sup", "_unsup", "_contrast")) or key in LOSS_TERMS):
                bad = ~torch.isfinite(value)
                prev = self.first_bad.get(key, torch.full((), -1, dtype=torch.long, device=value.device))
                self.first_bad[key] = torch.where(bad & (prev < 0), torch.full_like(prev, step), prev)

    def check(self, run_dir: Path, distributed: bool) -> None:
        """A UserError naming the first non-finite term (over all ranks when ``distributed``) and its step."""
        if not self.first_bad:
            return
        keys = [k for k in self.first_bad if k != "total"] + (["total"] if "total" in self.first_bad else [])
        flags = torch.stack([self.first_bad[k] for k in keys])
        if distributed:
            torch_dist.all_reduce(flags, op=torch_dist.ReduceOp.MAX)
        for key, first in zip(keys, flags.cpu().tolist()):
            if first >= 0:
                latest = Path(run_dir) / "checkpoints" / "latest.pt"
                kept = f"last good checkpoint kept: {latest}" if latest.exists() else "no checkpoint was written"
                raise UserError(f"non-finite loss term '{key}' at step {first}; training stopped, {kept}")
