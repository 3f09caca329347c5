"""Hermes losses: dual-threshold pseudo-labels, supervised/pixel contrast, memory bank, consistency, supervised."""
from Code.losses.class_prior import PoolPrior, adjust_to_prior, em_prior
from Code.losses.consistency import inter_task_consistency
from Code.losses.contrastive import SupConLoss, weighted_supcon
from Code.losses.dual_threshold import COMBINE_MODES, dual_threshold_mask, entropy_threshold, sigmoid_rampup
from Code.losses.memory_bank import MemoryBank
from Code.losses.pixel_contrast import PixelContrastLoss, sample_pixel_anchors
from Code.losses.supervised import masked_cross_entropy, masked_dice_loss, seg_supervised_loss

__all__ = [
    "COMBINE_MODES", "MemoryBank", "PixelContrastLoss", "PoolPrior", "SupConLoss", "adjust_to_prior",
    "dual_threshold_mask", "em_prior", "entropy_threshold",
    "inter_task_consistency", "masked_cross_entropy", "masked_dice_loss", "sample_pixel_anchors",
    "seg_supervised_loss", "sigmoid_rampup", "weighted_supcon",
]
