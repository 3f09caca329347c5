"""Who labels the weak view (``ssl.teacher``), docs/design.md, "Teachers".

- ``joint``: the weak view rides in the student's own forward together with the labeled and strong views (one
  BatchNorm batch whose statistics are dominated by no single pool), and its outputs are detached — FixMatch's
  way. Costs one more third of a forward/backward batch; stable from the first step.
- ``ema``: a mean teacher, an exponential moving average of the student's weights and buffers, run in eval mode
  (its BatchNorm uses running statistics, so an image's label does not depend on the rest of its batch):

      θ_t ← d(t)·θ_t + (1 − d(t))·θ_s,      d(t) = min(d, (1 + t) / (10 + t))

  (the ramped decay lets the young teacher follow the student closely in the first steps).
- ``eval``: the student itself with eval-mode BatchNorm under no-grad.
- ``train``: the reference — the student in train mode over the unlabeled batch alone; on an imbalanced pool its
  BatchNorm statistics push about half of every batch to the minority class.
"""
from __future__ import annotations

import copy
from typing import Dict

import torch
from torch import nn

TEACHERS = ("joint", "ema", "eval", "train")


class EMATeacher(nn.Module):
    """A frozen copy of ``student`` updated by :meth:`update`; always in eval mode."""

    def __init__(self, student: nn.Module, decay: float):
        super().__init__()
        self.decay = float(decay)
        self.model = copy.deepcopy(student)
        self.model.eval()
        for param in self.model.parameters():
            param.requires_grad_(False)

    def train(self, mode: bool = True) -> "EMATeacher":  # the teacher stays in eval mode
        super().train(mode)
        self.model.eval()
        return self

    def decay_at(self, step: int) -> float:
        """d(t) = min(d, (1 + t) / (10 + t))."""
        return min(self.decay, (1.0 + step) / (10.0 + step))

    @torch.no_grad()
    def update(self, student: nn.Module, step: int) -> None:
        """θ_t ← d(t)·θ_t + (1 − d(t))·θ_s for float parameters and buffers; integer buffers are copied."""
        d = self.decay_at(step)
        mine = self.model.state_dict()
        for name, value in student.state_dict().items():
            target = mine[name]
            if target.dtype.is_floating_point:
                target.mul_(d).add_(value.detach().to(target.dtype), alpha=1.0 - d)
            else:
                target.copy_(value)

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        with torch.no_grad():
            return self.model(x)
