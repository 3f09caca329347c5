"""Hermes network: smp encoder + U-Net decoder, classification branch, IAS attention, saliency, projection heads."""
from Code.models.attention import IASAttention
from Code.models.encoders import build_encoder, load_encoder_weights
from Code.models.heads import ClassificationBranch, MLPProjection, PixelProjection, masked_average_pool
from Code.models.hermes_net import HermesNet
from Code.models.saliency import SALIENCY_MODES, class_activation_map, input_gradient_saliency

__all__ = [
    "ClassificationBranch", "HermesNet", "IASAttention", "MLPProjection", "PixelProjection", "SALIENCY_MODES",
    "build_encoder", "class_activation_map", "input_gradient_saliency", "load_encoder_weights",
    "masked_average_pool",
]
