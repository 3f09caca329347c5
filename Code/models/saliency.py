"""Classifier evidence maps (the "S" of the IAS module), B×1×h×w with values in [0, 1].

* ``"cam"`` (default): class-activation map of the predicted class ŷ on the last classification feature F
  (B×C×h×w, 1/32 scale) with the linear classifier's weights W (K×C):

      CAM_b = ReLU(Σ_c W[ŷ_b, c]·F_b,c) / max(…)              (per-image max-normalised, ε-guarded)

  One forward, differentiable, no second backward, unaffected by mixed precision or DDP, and a coarse (1/32) but
  object-level map. This is why it is the default.
* ``"gradient"`` (the reference's choice): |∂ z_ŷ / ∂x| max over input channels, area-pooled to the target size
  and max-normalised. It needs a backward pass to the input inside the forward: ``torch.autograd.grad`` with
  ``inputs=[x]`` only, so nothing is written to any parameter's ``.grad`` (no leak into the optimiser) and DDP's
  parameter hooks never fire. Under autocast the objective is scaled by 2¹⁰ before the backward (fp16 input
  gradients would underflow) — harmless, since the map is max-normalised. With BatchNorm in training mode the
  samples of a batch are coupled, so the map of one image also sees the others (as in the reference).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

SALIENCY_MODES = ("cam", "gradient")
_EPS = 1e-6


def normalise_per_image(maps: torch.Tensor) -> torch.Tensor:
    """Divide each B×1×h×w map (non-negative) by its own maximum → values in [0, 1]."""
    return maps / maps.amax(dim=(2, 3), keepdim=True).clamp_min(_EPS)


def class_activation_map(features: torch.Tensor, classifier_weight: torch.Tensor,
                         target_class: torch.Tensor) -> torch.Tensor:
    """ReLU CAM of ``target_class`` (B, long) on features B×C×h×w with weights K×C → B×1×h×w in [0, 1]."""
    weights = classifier_weight[target_class].to(features.dtype)  # B×C
    cam = torch.einsum("bchw,bc->bhw", features, weights).unsqueeze(1)
    return normalise_per_image(F.relu(cam.float()))


def input_gradient_saliency(cls_logits: torch.Tensor, inputs: torch.Tensor, size: Sequence[int],
                            create_graph: bool = False) -> torch.Tensor:
    """|∂ z_ŷ/∂x| max over channels, area-pooled to ``size`` and max-normalised → B×1×h×w in [0, 1].

    ``inputs`` must require grad and ``cls_logits`` (B×K) must depend on it. The graph is retained for the
    caller's own backward; with ``create_graph=False`` the map carries no gradient.
    """
    top_class = cls_logits.detach().argmax(dim=1, keepdim=True)
    objective = cls_logits.float().gather(1, top_class).sum()
    if torch.is_autocast_enabled(inputs.device.type):
        objective = objective * 1024.0
    (grad,) = torch.autograd.grad(objective, inputs, retain_graph=True, create_graph=create_graph)
    maps = torch.nan_to_num(grad.float().abs(), nan=0.0, posinf=0.0).amax(dim=1, keepdim=True)
    return normalise_per_image(F.adaptive_avg_pool2d(maps, tuple(size)))
