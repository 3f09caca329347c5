"""Decoding, resizing and normalising images and masks (OpenCV), shared by training, evaluation and predict.py.

Normalisation: x = (pixel / 255 − mean_c) / std_c, with the ImageNet statistics for 3 channels (a grayscale
image replicated) and their averages for 1 channel, so that ImageNet-pretrained encoders see what they expect.
"""
from __future__ import annotations

from pathlib import Path
from typing import Tuple

import cv2
import numpy as np

from Code.errors import UserError

NORM_MEAN_RGB = (0.485, 0.456, 0.406)
NORM_STD_RGB = (0.229, 0.224, 0.225)
NORM_MEAN_GRAY = 0.449
NORM_STD_GRAY = 0.226
UNIT_LEVELS = np.arange(256, dtype=np.float32) / np.float32(255.0)  # uint8 value k → k / 255 as float32


def normalization(in_channels: int) -> Tuple[np.ndarray, np.ndarray]:
    """(mean (C,), std (C,)) float32 for C = in_channels ∈ {1, 3}."""
    if in_channels == 1:
        return np.array([NORM_MEAN_GRAY], np.float32), np.array([NORM_STD_GRAY], np.float32)
    if in_channels == 3:
        return np.array(NORM_MEAN_RGB, np.float32), np.array(NORM_STD_RGB, np.float32)
    raise UserError(f"in_channels must be 1 or 3, got {in_channels}")


def _read_bytes(path) -> np.ndarray:
    try:
        return np.fromfile(str(path), dtype=np.uint8)
    except OSError as exc:
        raise UserError(f"cannot read image {path}: {exc.strerror or exc}") from None


def decode_gray(path) -> np.ndarray:
    """Decode an image file as grayscale at its own bit depth: (H, W) uint8 or uint16; UserError naming the file
    if unreadable or of another sample type. (np.fromfile + cv2.imdecode, so that names with spaces or non-ASCII
    characters work everywhere.)"""
    if not Path(path).is_file():
        raise UserError(f"image not found: {path}")
    data = _read_bytes(path)
    if data.size == 0:
        raise UserError(f"cannot read image {path}: the file is empty (0 bytes)")
    try:
        image = cv2.imdecode(data, cv2.IMREAD_GRAYSCALE | cv2.IMREAD_ANYDEPTH)
    except cv2.error as exc:
        raise UserError(f"cannot read image {path} ({str(exc).strip().splitlines()[-1]})") from None
    if image is None or image.size == 0:
        raise UserError(f"cannot read image {path} (not an image OpenCV can decode)")
    if image.dtype not in (np.uint8, np.uint16):
        raise UserError(f"cannot read image {path}: {image.dtype} samples (save it as an 8- or 16-bit image)")
    return image


def to_uint8(image: np.ndarray) -> np.ndarray:
    """8-bit view of a decoded gray image (H, W): uint8 as is; uint16 by the bit width b of its largest value
    (at least 8): ``round(v · 255 / (2^b − 1))``, so 12-bit data (max ≤ 4095) spans 0–255 instead of 0–15 and a
    16-bit image holding 8-bit values keeps them."""
    if image.dtype == np.uint8:
        return image
    bits = max(8, int(image.max()).bit_length())
    return np.rint(image.astype(np.float32) * np.float32(255.0 / ((1 << bits) - 1))).astype(np.uint8)


def load_gray(path) -> np.ndarray:
    """Decode an image file as 8-bit grayscale, shape (H, W) uint8 (16-bit data scaled by :func:`to_uint8`);
    UserError naming the file if unreadable."""
    return to_uint8(decode_gray(path))


def binarize_mask(mask: np.ndarray, source: str = "mask") -> np.ndarray:
    """{0, 1} uint8 lesion mask (H, W) from a mask image:

    - at most two values (0/1, 0/255, 0/100, a 0/1/2 label map stored as 0/2, …): lesion = non-zero;
    - more values reaching above half the range h (h = 127 for 8-bit, 32767 for 16-bit masks; anti-aliased or
      JPEG-compressed 0/255 masks): lesion = pixel > h;
    - more values, all ≤ h (e.g. a 0/1/2 label map): ambiguous, a UserError naming ``source`` and the values.
    The values are those of the file at its own bit depth (:func:`decode_gray`): a 16-bit 0/1 mask is 0/1.
    """
    values = np.flatnonzero(np.bincount(mask.ravel(), minlength=256)) if mask.dtype == np.uint8 else np.unique(mask)
    if len(values) <= 2:
        return (mask > 0).astype(np.uint8)
    half = np.iinfo(mask.dtype).max // 2 if mask.dtype.kind == "u" else 127
    if values[-1] > half:
        return (mask > half).astype(np.uint8)
    shown = ", ".join(str(int(v)) for v in values[:6]) + (", …" if len(values) > 6 else "")
    raise UserError(f"{source}: ambiguous mask with values {shown}; store the lesion as 255 (or any single non-zero "
                    "value) and the background as 0")


def load_mask(path) -> np.ndarray:
    """Decode a mask file at its own bit depth as {0, 1} uint8 (H, W) (see :func:`binarize_mask`)."""
    return binarize_mask(decode_gray(path), f"mask {path}")


def resize_image(image: np.ndarray, size: int) -> np.ndarray:
    """Resize to size×size: area interpolation when shrinking, bilinear when enlarging."""
    if image.shape[:2] == (size, size):
        return image
    shrink = image.shape[0] * image.shape[1] > size * size
    return cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def resize_mask(mask: np.ndarray, size: int) -> np.ndarray:
    """Nearest-neighbour resize of a {0, 1} mask to size×size."""
    if mask.shape[:2] == (size, size):
        return mask
    return cv2.resize(mask, (size, size), interpolation=cv2.INTER_NEAREST)


def to_gray(image: np.ndarray) -> np.ndarray:
    """(H, W) or (H, W, 3|4) uint8 (OpenCV's BGR order) → (H, W) uint8."""
    if image.ndim == 2:
        return image
    if image.ndim == 3 and image.shape[2] == 1:
        return image[:, :, 0]
    if image.ndim == 3 and image.shape[2] in (3, 4):
        code = cv2.COLOR_BGR2GRAY if image.shape[2] == 3 else cv2.COLOR_BGRA2GRAY
        return cv2.cvtColor(image, code)
    raise UserError(f"expected an H×W or H×W×3 image, got shape {tuple(image.shape)}")


def normalize_to_tensor(gray: np.ndarray, in_channels: int) -> "torch.Tensor":
    """(H, W) gray, uint8 in [0, 255] or float32 in [0, 1] → normalised float32 tensor (C, H, W)."""
    import torch  # imported here so that the split tools (decoding only) start without torch
    mean, std = normalization(in_channels)
    scaled = cv2.LUT(gray, UNIT_LEVELS) if gray.dtype == np.uint8 else gray.astype(np.float32, copy=False)
    out = (scaled[None, :, :] - mean[:, None, None]) / std[:, None, None]
    return torch.from_numpy(np.ascontiguousarray(out, dtype=np.float32))


def preprocess(image: np.ndarray, size: int, in_channels: int = 1) -> "torch.Tensor":
    """Model input from an image of any size: uint8 (H, W) or (H, W, 3) → float32 (C, size, size).
    Gray conversion, :func:`resize_image`, normalisation; the same as the evaluation data path."""
    if image.dtype != np.uint8:
        raise UserError(f"preprocess expects a uint8 image, got {image.dtype}")
    return normalize_to_tensor(resize_image(to_gray(image), size), in_channels)


def denormalize(tensor: "torch.Tensor") -> "torch.Tensor":
    """Invert the normalisation for display: (…, C, H, W) with C ∈ {1, 3} → same shape in [0, 1]."""
    import torch
    channels = tensor.shape[-3]
    mean, std = normalization(channels)
    shape = (channels, 1, 1)
    mean_t = torch.as_tensor(mean, dtype=tensor.dtype, device=tensor.device).view(shape)
    std_t = torch.as_tensor(std, dtype=tensor.dtype, device=tensor.device).view(shape)
    return (tensor * std_t + mean_t).clamp(0.0, 1.0)
