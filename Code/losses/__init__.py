"""Hermes losses: supervised/pixel contrast, memory bank, consistency, supervised terms (the threshold policies
live in :mod:`Code.methods.thresholds`)."""
from Code.losses.consistency import inter_task_consistency
from Code.losses.contrastive import SupConLoss, weighted_supcon
from Code.losses.memory_bank import MemoryBank
from Code.losses.pixel_contrast import PixelContrastLoss, sample_pixel_anchors
from Code.losses.supervised import masked_cross_entropy, masked_dice_loss, seg_supervised_loss

__all__ = [
    "MemoryBank", "PixelContrastLoss", "SupConLoss", "inter_task_consistency", "masked_cross_entropy",
    "masked_dice_loss", "sample_pixel_anchors", "seg_supervised_loss", "weighted_supcon",
]
