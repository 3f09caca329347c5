"""Classification branch and projection heads of HermesNet.

Shapes use B = batch, h×w = the feature's own resolution.

* ``ClassificationBranch``: three conv blocks on the encoder features f3, f4, f5 (1/8, 1/16, 1/32):
      c3 = IAS₃(Block₃(f3), s8),   c4 = IAS₄(Block₄([f4; pool(c3)]), s16),   c5 = IAS₅(Block₅([f5; pool(c4)]), s32)
  with Block = (conv3×3-BN-ReLU)×2 and IAS_k applied only when segmentation features s are given (``ias``).
* ``PixelProjection``: 1×1 conv → BN → ReLU → 1×1 conv, L2-normalised over channels: B×C×h×w → B×D×h×w.
* ``MLPProjection``: Linear → ReLU → Linear (optionally L2-normalised): B×C → B×D.
* ``masked_average_pool``: Σ_xy w·F / Σ_xy w, the feature pooled under a weight map: B×C×h×w, B×1×H×W → B×C.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from segmentation_models_pytorch.base.modules import Conv2dReLU
from torch import nn

from Code.models.attention import IASAttention


class ConvBlock(nn.Sequential):
    """(conv3×3 → BN → ReLU) × 2."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(Conv2dReLU(in_channels, out_channels, kernel_size=3, padding=1),
                         Conv2dReLU(out_channels, out_channels, kernel_size=3, padding=1))


class ClassificationBranch(nn.Module):
    """Conv blocks on f3…f5, each stage optionally fused with a same-scale segmentation feature by IAS.

    encoder_channels: channels of (f3, f4, f5); stage_channels: output channels of the three blocks (default:
    those of f3…f5); seg_channels: channels of the segmentation features (s8, s16, s32), or None without IAS.
    ``forward([f3, f4, f5], [s8, s16, s32] or None)`` → c5, B×stage_channels[-1]×H/32×W/32.
    """

    def __init__(self, encoder_channels: Sequence[int], stage_channels: Optional[Sequence[int]] = None,
                 seg_channels: Optional[Sequence[int]] = None):
        super().__init__()
        stage_channels = list(stage_channels or encoder_channels)
        in_channels = [encoder_channels[0]] + [e + s for e, s in zip(encoder_channels[1:], stage_channels[:-1])]
        self.out_channels = stage_channels[-1]
        self.blocks = nn.ModuleList(ConvBlock(i, o) for i, o in zip(in_channels, stage_channels))
        self.ias = None
        if seg_channels is not None:
            self.ias = nn.ModuleList(IASAttention(c, s) for c, s in zip(stage_channels, seg_channels))

    def forward(self, encoder_features: Sequence[torch.Tensor],
                seg_features: Optional[Sequence[torch.Tensor]] = None) -> torch.Tensor:
        x = None
        for stage, (block, feature) in enumerate(zip(self.blocks, encoder_features)):
            if x is not None:
                feature = torch.cat([feature, F.adaptive_avg_pool2d(x, feature.shape[-2:])], dim=1)
            x = block(feature)
            if self.ias is not None:
                x = self.ias[stage](x, seg_features[stage])
        return x


class PixelProjection(nn.Module):
    """1×1-conv MLP with unit L2 norm over channels: B×C×h×w → B×D×h×w."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Conv2d(in_channels, in_channels, kernel_size=1, bias=False),
            nn.BatchNorm2d(in_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(in_channels, out_channels, kernel_size=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.mlp(x), dim=1)


class MLPProjection(nn.Module):
    """Linear → ReLU → Linear, unit L2 norm when ``normalize``: B×C → B×D."""

    def __init__(self, in_features: int, out_features: int, normalize: bool):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(in_features, in_features), nn.ReLU(inplace=True),
                                 nn.Linear(in_features, out_features))
        self.normalize = normalize

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.mlp(x)
        return F.normalize(x, dim=1) if self.normalize else x


def masked_average_pool(feature: torch.Tensor, weight: torch.Tensor, floor: float = 0.01) -> torch.Tensor:
    """Σ w'·F / Σ w' with w' = area-resized ``weight`` + ``floor``: B×C×h×w, B×1×H×W → B×C.

    The floor makes an image with an all-zero weight map fall back to global average pooling.
    """
    weight = F.adaptive_avg_pool2d(weight.to(feature.dtype), feature.shape[-2:]) + floor
    return (feature * weight).sum(dim=(2, 3)) / weight.sum(dim=(2, 3))
