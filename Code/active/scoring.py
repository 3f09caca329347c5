"""One batched pass of a saved model over a budget's unlabeled pool: the score parts and encoder features per image.

The model is used as it was saved (eval mode, no calibration): two forward hooks read, during the same forward
pass, the deepest encoder stage (B×C5×S/32×S/32, globally averaged → the features of ``diverse``) and the
classification feature map (B×C×h×w, from which the class-activation map of the predicted class is formed with
the classifier's weights, as HermesNet forms it). Nothing else is read: the split's test and val parts are never
opened.
"""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Dict, Iterator, List, Sequence, Tuple

import numpy as np
import torch

from Code.active.strategies import PARTS, batch_parts
from Code.data import load_gray, preprocess
from Code.inference.prediction import predict_batch
from Code.models.saliency import class_activation_map


@contextmanager
def feature_taps(model: torch.nn.Module) -> Iterator[Dict[str, torch.Tensor]]:
    """A dict filled at each forward with ``encoder`` (B×C5, pooled deepest encoder stage) and ``cls_feature``
    (B×C×h×w); the hooks are removed on exit."""
    taps: Dict[str, torch.Tensor] = {}

    def encoder_hook(_module, _inputs, output):
        taps["encoder"] = output[-1].detach().float().mean(dim=(2, 3))

    def cls_hook(_module, _inputs, output):
        taps["cls_feature"] = output.detach().float()

    handles = [model.encoder.register_forward_hook(encoder_hook), model.cls_branch.register_forward_hook(cls_hook)]
    try:
        yield taps
    finally:
        for handle in handles:
            handle.remove()


def load_batch(paths: Sequence[Path], size: int, in_channels: int) -> torch.Tensor:
    """The images at ``paths`` prepared as the model's input: B×C×S×S (grayscale, resized, normalised)."""
    return torch.stack([preprocess(load_gray(path), size, in_channels) for path in paths])


def run_batch(model: torch.nn.Module, images: torch.Tensor, amp: bool, taps: Dict[str, torch.Tensor]
              ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(seg B×2×S×S, cls B×K, cam B×1×h×w)`` on the CPU for one batch (already on the model's device)."""
    seg, cls = predict_batch(model, images, amp)
    cam = class_activation_map(taps["cls_feature"], model.cls_head.weight.detach().float(), cls.argmax(dim=1))
    return seg.cpu(), cls.cpu(), cam.cpu()


def score_pool(model: torch.nn.Module, paths: Sequence[Path], size: int, in_channels: int, device: torch.device,
               batch_size: int, amp: bool = False) -> Tuple[Dict[str, np.ndarray], np.ndarray]:
    """``(parts, features)`` for every image of ``paths``: :data:`PARTS` → length-n arrays, features n×C5."""
    parts: Dict[str, List[np.ndarray]] = {name: [] for name in PARTS}
    features: List[np.ndarray] = []
    with feature_taps(model) as taps:
        for start in range(0, len(paths), batch_size):
            images = load_batch(paths[start:start + batch_size], size, in_channels).to(device)
            seg, cls, cam = run_batch(model, images, amp, taps)
            for name, values in batch_parts(seg, cls, cam).items():
                parts[name].append(values.numpy())
            features.append(taps["encoder"].cpu().numpy())
    return {name: np.concatenate(v) for name, v in parts.items()}, np.concatenate(features)


def predict_maps(model: torch.nn.Module, paths: Sequence[Path], size: int, in_channels: int, device: torch.device,
                 amp: bool = False) -> List[Tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """For the contact sheet: per image ``(input gray S×S uint8, predicted mask S×S {0,1}, entropy map S×S)``."""
    from Code.data import resize_image
    from Code.inference.uncertainty import normalized_entropy

    out = []
    for path in paths:
        gray = load_gray(path)
        seg, _ = predict_batch(model, preprocess(gray, size, in_channels)[None].to(device), amp)
        seg = seg[0].cpu()
        out.append((resize_image(gray, size), (seg[1] > 0.5).numpy().astype(np.uint8),
                    normalized_entropy(seg[None], dim=1)[0].numpy()))
    return out
