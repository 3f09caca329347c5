"""Weak (geometric) and strong (geometric + photometric) augmentation, seeded per sample.

Geometry: one affine map from the raw image to the S×S output, M = T(c + t) · R(φ) · Z(z) · F · T(−c) · D, with
D the resize to S×S (stretch, as at evaluation), F an optional horizontal flip, z a zoom, φ a small rotation,
t a shift, c the output centre; applied with ONE ``cv2.warpAffine`` per array (bilinear for images, nearest for
masks). No vertical flips and no anisotropic scaling: depth direction and the taller-than-wide shape are
diagnostic in ultrasound. The strong view is the weak view (same warped pixels) passed through photometric ops on
x ∈ [0, 1]: brightness/contrast x' = (x − x̄)·c + x̄ + b and gamma x^γ (pointwise: one 256-entry lookup table on
the uint8 pixels), depth gain x·(1 + g·(y − ½)), speckle x·(1 + σ·n) with n ~ N(0, 1) drawn at half resolution and
upsampled (speckle grains span pixels), Gaussian blur, optional cutout; each with its own probability.

Every draw comes from the ``numpy.random.Generator`` passed in (the dataset makes it from (seed, epoch, index)),
always in the same order whether or not an op is enabled, so the stream does not shift when settings change.
"""
from __future__ import annotations

import math
from typing import Mapping, Optional

import cv2
import numpy as np

from Code.data.image_io import UNIT_LEVELS
from Code.errors import UserError

DEFAULT_AUG = {
    "geometric": True,            # master switch of the weak geometry
    "scale": (0.85, 1.15),        # zoom range (> 1 zooms in)
    "translate": 0.08,            # max shift, fraction of the side
    "rotate": 10.0,               # max rotation, degrees
    "hflip": 0.5,                 # probability of a horizontal flip
    "photometric": True,          # master switch of the strong view's photometric ops
    "color_p": 0.8, "brightness": 0.15, "contrast": 0.3,
    "gamma_p": 0.5, "gamma": (0.7, 1.5),
    "gain_p": 0.3, "gain": 0.4,   # ultrasound-specific: depth (TGC) gain ramp amplitude
    "speckle_p": 0.5, "speckle": (0.05, 0.3),  # ultrasound-specific: multiplicative speckle noise σ range
    "blur_p": 0.3, "blur_sigma": (0.3, 1.5),
    "cutout_p": 0.0, "cutout_size": (0.1, 0.3),  # side of the cut square, fraction of the image side
}
_PROBABILITIES = {k for k in DEFAULT_AUG if k.endswith("_p")} | {"hflip"}


def _check_value(key: str, value, default):
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise UserError(f"aug.{key} must be true or false, got {value!r}")
        return value
    if isinstance(default, tuple):
        if not (isinstance(value, (list, tuple)) and len(value) == 2
                and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
                and value[0] <= value[1]):
            raise UserError(f"aug.{key} must be a range [low, high] with low <= high, got {value!r}")
        return (float(value[0]), float(value[1]))
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
        raise UserError(f"aug.{key} must be a number >= 0, got {value!r}")
    if key in _PROBABILITIES and value > 1:
        raise UserError(f"aug.{key} is a probability and must be in [0, 1], got {value!r}")
    return float(value)


def resolve_aug(aug: Optional[Mapping] = None) -> dict:
    """DEFAULT_AUG overridden by `aug`; UserError for an unknown key (listing the valid ones) or a bad value."""
    settings = dict(DEFAULT_AUG)
    for key, value in (aug or {}).items():
        if key not in DEFAULT_AUG:
            raise UserError(f"unknown augmentation setting aug.{key}; valid keys: {', '.join(DEFAULT_AUG)}")
        settings[key] = _check_value(key, value, DEFAULT_AUG[key])
    return settings


def sample_geometry(rng: np.random.Generator, aug: dict, in_hw: tuple, size: int) -> np.ndarray:
    """2×3 float64 affine matrix mapping raw-image pixel coordinates to the size×size output."""
    zoom = rng.uniform(*aug["scale"])
    angle = rng.uniform(-aug["rotate"], aug["rotate"])
    shift = rng.uniform(-aug["translate"], aug["translate"], size=2) * size
    flip = rng.random() < aug["hflip"]
    height, width = in_hw
    resize = np.diag([size / width, size / height, 1.0])
    if not aug["geometric"]:
        return resize[:2]
    centre = (size - 1) / 2.0
    to_centre = np.array([[1, 0, -centre], [0, 1, -centre], [0, 0, 1]], np.float64)
    mirror = np.diag([-1.0 if flip else 1.0, 1.0, 1.0])
    c, s = math.cos(math.radians(angle)) * zoom, math.sin(math.radians(angle)) * zoom
    rotate_zoom = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]], np.float64)
    back = np.array([[1, 0, centre + shift[0]], [0, 1, centre + shift[1]], [0, 0, 1]], np.float64)
    return (back @ rotate_zoom @ mirror @ to_centre @ resize)[:2]


def warp_image(image: np.ndarray, matrix: np.ndarray, size: int) -> np.ndarray:
    """Bilinear warp of a uint8 image to size×size (zeros outside)."""
    return cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)


def warp_mask(mask: np.ndarray, matrix: np.ndarray, size: int) -> np.ndarray:
    """Nearest-neighbour warp of a {0, 1} mask to size×size (background outside)."""
    return cv2.warpAffine(mask, matrix, (size, size), flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT)


def _pointwise_lut(image: np.ndarray, aug: dict, use_color: bool, use_gamma: bool, brightness: float,
                   contrast: float, gamma: float) -> np.ndarray:
    """Brightness/contrast then gamma as one 256-entry float32 table (both are pointwise on a uint8 image)."""
    levels = UNIT_LEVELS.copy()
    if use_color:
        mean = float(cv2.mean(image)[0]) / 255.0
        levels = (levels - mean) * contrast + mean + brightness
    if use_gamma:
        levels = np.power(np.clip(levels, 0.0, 1.0), gamma)
    return levels.astype(np.float32)


def photometric(image: np.ndarray, rng: np.random.Generator, aug: dict) -> np.ndarray:
    """Strong-view photometric distortion of a (S, S) uint8 image → float32 in [0, 1]; geometry untouched."""
    draws = rng.random(6)
    brightness = rng.uniform(-aug["brightness"], aug["brightness"])
    contrast = rng.uniform(1.0 - aug["contrast"], 1.0 + aug["contrast"])
    gamma = math.exp(rng.uniform(math.log(aug["gamma"][0] + 1e-6), math.log(aug["gamma"][1] + 1e-6)))
    gain = rng.uniform(-aug["gain"], aug["gain"])
    speckle_sigma = rng.uniform(*aug["speckle"])
    blur_sigma = rng.uniform(*aug["blur_sigma"])
    cut_side = rng.uniform(*aug["cutout_size"])
    cut_centre = rng.random(2)
    on = aug["photometric"]
    lut = _pointwise_lut(image, aug, on and draws[0] < aug["color_p"], on and draws[1] < aug["gamma_p"],
                         brightness, contrast, gamma)
    x = cv2.LUT(image, lut)
    if not on:
        return x
    if draws[2] < aug["gain_p"]:
        depth = np.linspace(-0.5, 0.5, x.shape[0], dtype=np.float32)[:, None]
        x *= 1.0 + gain * depth
    if draws[3] < aug["speckle_p"]:  # noise drawn at half resolution: correlated grains, 4× fewer draws
        half = (max(1, x.shape[0] // 2), max(1, x.shape[1] // 2))
        grains = rng.standard_normal(half, dtype=np.float32)
        x *= 1.0 + speckle_sigma * cv2.resize(grains, (x.shape[1], x.shape[0]), interpolation=cv2.INTER_LINEAR)
    if draws[4] < aug["blur_p"] and blur_sigma > 0:
        x = cv2.GaussianBlur(x, (0, 0), sigmaX=blur_sigma)
    if draws[5] < aug["cutout_p"]:
        side = max(1, int(cut_side * x.shape[0]))
        y0, x0 = (cut_centre * (np.array(x.shape) - side)).astype(int)
        x[y0:y0 + side, x0:x0 + side] = 0.0
    return np.clip(x, 0.0, 1.0, out=x)
