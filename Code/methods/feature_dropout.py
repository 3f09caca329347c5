"""Channel dropout on chosen batch rows of a network's encoder features (UniMatch's feature perturbation), shared by
:mod:`Code.methods.unimatch` and Hermes' feature-perturbation stream (:mod:`Code.methods.hermes_streams`)."""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

Tensor = torch.Tensor


class FeatureDropout:
    """Forward hooks on a network's encoder(s) that, while ``rows`` is set, apply channel dropout with probability
    ``p`` to the batch rows ``rows`` (a slice) of every encoder feature but the first (the input itself).

    Hooks stay registered (so that a ``torch.compile``-d model is not re-traced every step); unset they return
    the features unchanged."""

    def __init__(self, p: float):
        self.p, self.rows, self.net = p, None, None
        self.handles = []

    def attach(self, net: nn.Module) -> None:
        """Hook ``net.encoder`` (and ``net.cls_encoder`` when the tasks have their own) unless already hooked."""
        if net is self.net:
            return
        for handle in self.handles:
            handle.remove()
        encoders = [getattr(net, "encoder", None), getattr(net, "cls_encoder", None)]
        self.handles = [e.register_forward_hook(self._hook) for e in encoders if e is not None]
        if not self.handles:
            raise ValueError("unimatch: the network has no .encoder whose features could be perturbed")
        self.net = net

    def _hook(self, module: nn.Module, inputs, features: Sequence[Tensor]):
        if self.rows is None:
            return None  # the output unchanged
        out = [features[0]]
        for f in features[1:]:
            dropped = F.dropout2d(f[self.rows], self.p, training=True)
            out.append(torch.cat([f[:self.rows.start], dropped, f[self.rows.stop:]]))
        return out
