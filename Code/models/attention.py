"""Inter-task attention (the "I" of the IAS module): segmentation features steer the classification branch.

For a classification feature c (B×Cc×h×w) and a segmentation feature s (B×Cs×h'×w', resized to h×w if needed):

    z = ReLU(BN(conv3×3([c; s])))                          B×Cc×h×w   fused evidence of both tasks
    a = σ(MLP(GAP(z)))                                      B×Cc×1×1   channel attention (MLP = 1×1 convs, r = 16)
    x = a ⊙ c
    m = σ(conv7×7([max_ch(x); mean_ch(x)]))                 B×1×h×w    spatial attention
    y = m ⊙ x                                               B×Cc×h×w
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from segmentation_models_pytorch.base.modules import Conv2dReLU
from torch import nn


class IASAttention(nn.Module):
    """Channel then spatial attention on a classification feature, driven by a same-scale segmentation feature."""

    def __init__(self, cls_channels: int, seg_channels: int, reduction: int = 16, spatial_kernel: int = 7):
        super().__init__()
        hidden = max(cls_channels // reduction, 8)
        self.fuse = Conv2dReLU(cls_channels + seg_channels, cls_channels, kernel_size=3, padding=1)
        self.channel_mlp = nn.Sequential(
            nn.Conv2d(cls_channels, hidden, kernel_size=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, cls_channels, kernel_size=1),
        )
        self.spatial_conv = nn.Conv2d(2, 1, kernel_size=spatial_kernel, padding=spatial_kernel // 2)

    def forward(self, cls_feature: torch.Tensor, seg_feature: torch.Tensor) -> torch.Tensor:
        if seg_feature.shape[-2:] != cls_feature.shape[-2:]:
            seg_feature = F.interpolate(seg_feature, size=cls_feature.shape[-2:], mode="bilinear",
                                        align_corners=False)
        fused = self.fuse(torch.cat([cls_feature, seg_feature], dim=1))
        channel_attention = torch.sigmoid(self.channel_mlp(F.adaptive_avg_pool2d(fused, 1)))
        x = cls_feature * channel_attention
        pooled = torch.cat([x.amax(dim=1, keepdim=True), x.mean(dim=1, keepdim=True)], dim=1)
        spatial_attention = torch.sigmoid(self.spatial_conv(pooled))
        return x * spatial_attention
