"""Synthesis of one B-mode ultrasound frame with one lesion: the physics of the built-in phantom
(docs/design.md, "The built-in phantom").

Image model, per frame of size S×S (rows = depth y, columns = lateral x, coordinates in units of S):

1. log-reflectivity map L(y, x): tissue layers (skin, fat with Cooper ligaments and fat lobules, glandular tissue
   with smooth texture, ducts and small lesion-like hypoechoic distractors, muscle with striations), a lesion
   (clearly hypoechoic, faint, or faint with an echogenic rim) (soft-edged polar shape
   ρ < r(θ) = r_ellipse(θ) · (1 + Σ_k c_k cos(kθ + φ_k)) + spicules), internal heterogeneity, rim (capsule/halo),
   calcifications and a posterior column below the lesion (enhancement > 0 or shadowing < 0 in L);
2. scatterers z = exp(L) · (n_re + i n_im), n ~ N(0, 1) white, plus a few bright point scatterers;
3. baseband PSF: z * h with h an anisotropic Gaussian (axial σ_y < lateral σ_x), unit energy;
4. envelope |z * h| · exp(−α y) (depth attenuation, partly compensated), log compression
   g = 255 · (20 log10 env − top + DR) / DR clipped to [0, 255].

A *case* (:class:`CaseParams`) holds everything that is the same in all of its frames (tissue, lesion shape, class
features); each frame draws fresh speckle and a small lesion pose change (shift, rotation, scale).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Optional

import cv2
import numpy as np

THETA_BINS = 720  # resolution of the tabulated lesion radius r(θ)


@dataclass
class CaseParams:
    """Everything shared by the frames of one case; lengths are in units of the image side S."""
    malignant: bool
    center: tuple          # lesion centre (x, y)
    radius: float          # equivalent radius r0
    aspect: float          # height / width of the base ellipse (> 1: taller-than-wide)
    tilt: float            # rotation of the lesion frame, radians
    radius_table: np.ndarray  # r(θ) / r0 on THETA_BINS angles (shape irregularity and spicules)
    edge_width: float      # width of the soft margin (pixels at S = 256)
    contrast: float        # lesion / tissue log-amplitude, < 0 (hypoechoic)
    heterogeneity: float   # std of the smooth log-amplitude field inside the lesion
    heterogeneity_grid: np.ndarray  # (5, 5) random grid upsampled to that field
    rim: float             # > 0 bright capsule or echogenic halo around the margin, in log-amplitude
    posterior: float       # log-amplitude gain below the lesion: > 0 enhancement, < 0 shadowing
    calcifications: int    # number of bright micro-calcifications
    tissue: dict           # layer depths, textures and distractors (see sample_tissue)


def _uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(rng.uniform(lo, hi))


def sample_radius_table(rng: np.random.Generator, malignant: bool) -> np.ndarray:
    """r(θ)/r0 on THETA_BINS angles: low-order lobulation for both classes, fine irregularity and spicules
    mostly for malignant lesions; the class distributions overlap.  Shape (THETA_BINS,) float32."""
    theta = np.linspace(-np.pi, np.pi, THETA_BINS, endpoint=False)
    table = np.ones_like(theta)
    irregular = rng.random() < (0.8 if malignant else 0.25)
    k_max = int(rng.integers(6, 14)) if irregular else 4
    amp_scale = _uniform(rng, 0.02, 0.07) if irregular else _uniform(rng, 0.0, 0.04)
    for k in range(2, k_max + 1):
        table += amp_scale * rng.standard_normal() * np.cos(k * theta + rng.uniform(0, 2 * np.pi)) / np.sqrt(k / 2)
    if rng.random() < (0.55 if malignant else 0.1):
        for _ in range(int(rng.integers(3, 10))):
            centre, width = rng.uniform(-np.pi, np.pi), _uniform(rng, 0.04, 0.12)
            distance = np.angle(np.exp(1j * (theta - centre)))
            table += _uniform(rng, 0.15, 0.5) * np.exp(-(distance / width) ** 2)
    return np.clip(table, 0.5, None).astype(np.float32)


def sample_tissue(rng: np.random.Generator) -> dict:
    """Layer depths, textures and distractors of one case: fat lobules, duct-like bands and small, flat,
    lesion-like hypoechoic blobs (no posterior effect) that a segmenter must learn to ignore."""
    lobules = [(_uniform(rng, 0.0, 1.0), _uniform(rng, 0.03, 0.06), _uniform(rng, 0.02, 0.035),
                _uniform(rng, -0.5, -0.3)) for _ in range(int(rng.integers(2, 6)))]
    ducts = [(_uniform(rng, 0.2, 0.8), _uniform(rng, 0.35, 0.8), _uniform(rng, 0.04, 0.1),
              _uniform(rng, 0.015, 0.035), _uniform(rng, -0.6, 0.6), _uniform(rng, -1.2, -0.4))
             for _ in range(int(rng.integers(0, 3)))]
    for _ in range(int(rng.integers(1, 4))):  # lesion-like distractors: smaller, flatter, no posterior effect
        rx = _uniform(rng, 0.03, 0.075)
        ducts.append((_uniform(rng, 0.1, 0.9), _uniform(rng, 0.3, 0.72), rx, rx * _uniform(rng, 0.35, 0.8),
                      _uniform(rng, -0.5, 0.5), _uniform(rng, -1.6, -0.35)))
    return {
        "skin": _uniform(rng, 0.03, 0.06), "fat": _uniform(rng, 0.14, 0.28), "muscle": _uniform(rng, 0.75, 0.92),
        "wave": [(_uniform(rng, 0.005, 0.025), _uniform(rng, 0.5, 2.5), _uniform(rng, 0, 2 * np.pi))
                 for _ in range(3)],
        "fat_level": _uniform(rng, -0.9, -0.5), "gland_texture": _uniform(rng, 0.15, 0.5),
        "texture_grid": rng.standard_normal((10, 10)).astype(np.float32),
        "septa": [(_uniform(rng, 0.0, 1.0), _uniform(rng, 0.02, 0.06), _uniform(rng, 1.0, 4.0),
                   _uniform(rng, 0, 2 * np.pi)) for _ in range(int(rng.integers(1, 4)))],
        "lobules": lobules, "ducts": ducts,
        "attenuation": _uniform(rng, 0.3, 1.3), "dynamic_range": _uniform(rng, 45.0, 60.0),
        "psf": (_uniform(rng, 0.7, 1.5), _uniform(rng, 1.4, 3.4)),
    }


APPEARANCES = ("hypoechoic", "faint", "faint_rim")
APPEARANCE_SHARES = (0.6, 0.25, 0.15)


def sample_case(rng: np.random.Generator, malignant: bool) -> CaseParams:
    """Draw one case. Class features are overlapping distributions, never deterministic rules.

    Appearance (both classes alike): clearly hypoechoic (60 %), faint (25 %: −4.3 … −2.2 dB) or faint with an
    echogenic rim that outlines a nearly isoechoic lesion (15 %)."""
    m = malignant
    appearance = APPEARANCES[int(rng.choice(len(APPEARANCES), p=APPEARANCE_SHARES))]
    contrast = {"hypoechoic": (-2.0, -0.5), "faint": (-0.5, -0.25), "faint_rim": (-0.3, -0.1)}[appearance]
    contrast = _uniform(rng, *contrast)
    posterior_draw = rng.random()  # malignant: mostly shadowing; benign: mostly enhancement; both can be either
    if m:
        posterior = _uniform(rng, -1.1, -0.35) if posterior_draw < 0.65 else (
            _uniform(rng, 0.1, 0.4) if posterior_draw < 0.75 else 0.0)
    else:
        posterior = _uniform(rng, 0.2, 0.7) if posterior_draw < 0.6 else (
            _uniform(rng, -0.5, -0.15) if posterior_draw < 0.72 else 0.0)
    rim_draw = rng.random()
    rim = _uniform(rng, 0.2, 0.6) if rim_draw < 0.35 else 0.0
    if appearance == "faint_rim":
        rim = _uniform(rng, 0.45, 0.8)
    return CaseParams(
        malignant=m,
        center=(_uniform(rng, 0.22, 0.78), _uniform(rng, 0.35, 0.62)),
        radius=_uniform(rng, 0.045, 0.17),
        aspect=float(np.exp(rng.normal(0.0, 0.3) if m else rng.normal(-0.25, 0.3))),
        tilt=_uniform(rng, -0.35, 0.35),
        radius_table=sample_radius_table(rng, m),
        edge_width=_uniform(rng, 1.5, 5.0) if m else _uniform(rng, 0.8, 2.5),
        contrast=contrast,
        heterogeneity=_uniform(rng, 0.15, 0.55) if m else _uniform(rng, 0.0, 0.3),
        heterogeneity_grid=rng.standard_normal((5, 5)).astype(np.float32),
        rim=rim,
        posterior=posterior,
        calcifications=(int(rng.integers(3, 15)) if m else int(rng.integers(1, 4)))
        if rng.random() < (0.55 if m else 0.08) else 0,
        tissue=sample_tissue(rng),
    )


@lru_cache(maxsize=8)
def _grid(size: int) -> tuple:
    """Pixel-centre coordinates in units of S: (y column (S,1), x row (1,S)), float32."""
    axis = ((np.arange(size, dtype=np.float32) + 0.5) / size)
    return axis[:, None], axis[None, :]


def _smooth_field(grid: np.ndarray, height: int, width: int) -> np.ndarray:
    """Upsample a small random grid to a smooth (height, width) float32 field with unit-ish std."""
    return cv2.resize(grid, (width, height), interpolation=cv2.INTER_CUBIC)


def _boundary(depth: float, wave: list, x: np.ndarray) -> np.ndarray:
    """Wavy layer boundary y = depth + Σ a sin(2π f x + φ), shape like x."""
    return depth + sum(a * np.sin(2 * np.pi * f * x + p) for a, f, p in wave)


def _soft_ellipse(log_map: np.ndarray, cx: float, cy: float, rx: float, ry: float, angle: float,
                  level: float) -> None:
    """Add `level` inside a soft-edged ellipse (units of S) to log_map, in place, on its bounding box only."""
    size = log_map.shape[0]
    r = max(rx, ry)
    x0, x1 = max(int((cx - r) * size) - 2, 0), min(int((cx + r) * size) + 3, size)
    y0, y1 = max(int((cy - r) * size) - 2, 0), min(int((cy + r) * size) + 3, size)
    ys, xs = _grid(size)
    dx, dy = xs[:, x0:x1] - cx, ys[y0:y1] - cy
    c, s = np.cos(angle), np.sin(angle)
    q = ((c * dx + s * dy) / rx) ** 2 + ((-s * dx + c * dy) / ry) ** 2
    log_map[y0:y1, x0:x1] += level * np.clip((1.0 - q) * 4.0, 0.0, 1.0)


def tissue_log_map(tissue: dict, size: int) -> np.ndarray:
    """Log-reflectivity of the background tissue, shape (S, S) float32 (0 = glandular tissue level)."""
    ys, xs = _grid(size)
    skin = _boundary(tissue["skin"], tissue["wave"][:1], xs)
    fat = _boundary(tissue["fat"], tissue["wave"][:2], xs)
    muscle = _boundary(tissue["muscle"], tissue["wave"][1:], xs)
    ramp = 1.5 * size  # transition over ~1 px
    in_skin = np.clip((skin - ys) * ramp + 0.5, 0, 1)
    in_fat = np.clip((fat - ys) * ramp + 0.5, 0, 1) - in_skin
    in_muscle = np.clip((ys - muscle) * ramp + 0.5, 0, 1)
    texture = _smooth_field(tissue["texture_grid"], size, size) * tissue["gland_texture"]
    log_map = texture * (1 - in_skin - in_fat - in_muscle)
    log_map += in_skin * 0.9 + in_fat * tissue["fat_level"]
    log_map += in_muscle * (-0.35 + 0.35 * np.sin(2 * np.pi * 28 * (ys + 0.03 * xs)))
    for depth, amp, freq, phase in tissue["septa"]:
        curve = tissue["skin"] + depth * (tissue["fat"] - tissue["skin"]) + amp * np.sin(2 * np.pi * freq * xs + phase)
        log_map += 0.8 * in_fat * np.exp(-(((ys - curve) * size / 1.2) ** 2))
    for cx, rx, ry, level in tissue["lobules"]:
        _soft_ellipse(log_map, cx, 0.5 * (tissue["skin"] + tissue["fat"]) + 0.02 * (cx - 0.5), rx, ry, 0.0, level)
    for cx, cy, rx, ry, angle, level in tissue["ducts"]:
        _soft_ellipse(log_map, cx, cy, rx, ry, angle * 0.3, level)
    return log_map.astype(np.float32)


@dataclass
class FramePose:
    """Per-frame jitter of a case: lesion shift (units of S), extra rotation (rad), scale; imaging gain (dB)."""
    shift: tuple
    rotation: float
    scale: float
    top_db: float
    attenuation_jitter: float

    @staticmethod
    def sample(rng: np.random.Generator) -> "FramePose":
        return FramePose(shift=(_uniform(rng, -0.03, 0.03), _uniform(rng, -0.02, 0.02)),
                         rotation=_uniform(rng, -0.15, 0.15), scale=_uniform(rng, 0.93, 1.07),
                         top_db=_uniform(rng, 22.0, 28.0), attenuation_jitter=_uniform(rng, 0.85, 1.15))


def lesion_signed_distance(case: CaseParams, pose: FramePose, size: int) -> tuple:
    """Signed distance d = (r(θ) − ρ)·S in pixels (> 0 inside) on the lesion's bounding box.

    Returns (d (h, w) float32, (y0, y1, x0, x1) box). ρ, θ are polar coordinates in the rotated lesion frame;
    r(θ) = r_ellipse(θ) · table(θ) with half-axes r0/√aspect (lateral) and r0·√aspect (axial)."""
    cx, cy = case.center[0] + pose.shift[0], case.center[1] + pose.shift[1]
    r0 = case.radius * pose.scale
    half_w, half_h = r0 / np.sqrt(case.aspect), r0 * np.sqrt(case.aspect)
    reach = max(half_w, half_h) * float(case.radius_table.max()) + 6.0 / size
    x0, x1 = max(int((cx - reach) * size), 0), min(int((cx + reach) * size) + 1, size)
    y0, y1 = max(int((cy - reach) * size), 0), min(int((cy + reach) * size) + 1, size)
    ys, xs = _grid(size)
    dx, dy = xs[:, x0:x1] - cx, ys[y0:y1] - cy
    angle = case.tilt + pose.rotation
    c, s = np.cos(angle), np.sin(angle)
    u, v = c * dx + s * dy, -s * dx + c * dy
    rho = np.sqrt(u * u + v * v)
    theta = np.arctan2(v, u)
    r_ellipse = 1.0 / np.sqrt((np.cos(theta) / half_w) ** 2 + (np.sin(theta) / half_h) ** 2)
    bins = ((theta + np.pi) * (THETA_BINS / (2 * np.pi))).astype(np.int32) % THETA_BINS
    distance = (r_ellipse * case.radius_table[bins] - rho) * size
    return distance.astype(np.float32), (y0, y1, x0, x1)


def posterior_effect(softmask: np.ndarray, box: tuple, size: int, gain: float) -> np.ndarray:
    """Posterior column below the lesion: E(y, x) = gain · w(x) · clip((y − bottom(x)) / ramp, 0, 1) for the
    lesion's columns, w(x) ∝ sqrt(chord length) smoothed laterally. Shape (S, x1 − x0) float32."""
    y0, y1, x0, x1 = box
    chord = softmask.sum(axis=0)
    if gain == 0.0 or chord.max() <= 0:
        return np.zeros((size, x1 - x0), np.float32)
    rows_inside = np.where(softmask > 0.5, np.arange(y0, y1)[:, None], -1)
    bottom = rows_inside.max(axis=0).astype(np.float32)
    bottom[bottom < 0] = size
    weight = np.sqrt(chord / chord.max()).astype(np.float32)
    weight = cv2.GaussianBlur(weight[None, :], (0, 0), sigmaX=max(1.0, 0.01 * size))[0]
    ramp = 0.04 * size
    below = np.clip((np.arange(size, dtype=np.float32)[:, None] - bottom[None, :]) / ramp, 0.0, 1.0)
    return (gain * weight[None, :] * below).astype(np.float32)


def _lesion_into(log_map: np.ndarray, case: CaseParams, pose: FramePose, rng: np.random.Generator) -> tuple:
    """Paint the lesion (contrast, heterogeneity, rim, posterior column) into log_map in place.
    Returns (mask (S, S) bool, list of calcification pixel positions)."""
    size = log_map.shape[0]
    distance, box = lesion_signed_distance(case, pose, size)
    y0, y1, x0, x1 = box
    soft = np.clip(0.5 + distance / (case.edge_width * size / 256.0), 0.0, 1.0)
    inside = case.contrast + case.heterogeneity * _smooth_field(case.heterogeneity_grid, y1 - y0, x1 - x0)
    crop = log_map[y0:y1, x0:x1]
    crop *= 1.0 - soft
    crop += soft * inside
    if case.rim:
        crop += case.rim * np.exp(-(((distance + 2.0 * size / 256.0) / (1.5 * size / 256.0)) ** 2))
    log_map[:, x0:x1] += posterior_effect(soft, box, size, case.posterior)
    mask = np.zeros((size, size), bool)
    mask[y0:y1, x0:x1] = distance > 0
    calcs = []
    if case.calcifications:
        iy, ix = np.nonzero(distance > 1.5 * size / 256.0)
        if len(iy):
            pick = rng.integers(0, len(iy), size=case.calcifications)
            calcs = [(int(iy[p]) + y0, int(ix[p]) + x0) for p in pick]
    return mask, calcs


def render_frame(case: CaseParams, rng: np.random.Generator, size: int,
                 tissue_map: Optional[np.ndarray] = None) -> tuple:
    """One B-mode frame of `case`: returns (image (S, S) uint8, mask (S, S) uint8 in {0, 255}).

    `tissue_map` (the case's tissue_log_map) may be passed to reuse it across frames."""
    pose = FramePose.sample(rng)
    log_map = (tissue_log_map(case.tissue, size) if tissue_map is None else tissue_map).copy()
    mask, calcs = _lesion_into(log_map, case, pose, rng)
    amplitude = np.exp(log_map)
    noise = rng.standard_normal((2, size, size), dtype=np.float32)
    field_re, field_im = amplitude * noise[0], amplitude * noise[1]
    bright = rng.random((size, size), dtype=np.float32) < 0.002
    field_re[bright] *= 3.0
    for py, px in calcs:
        strength = float(rng.uniform(12.0, 30.0))
        field_re[py, px] += strength
        field_im[py, px] += strength * float(rng.uniform(-1, 1))
    sigma_axial, sigma_lateral = (s * size / 256.0 for s in case.tissue["psf"])
    unit_energy = np.sqrt(4 * np.pi * sigma_axial * sigma_lateral)
    field_re = cv2.GaussianBlur(field_re, (0, 0), sigmaX=sigma_lateral, sigmaY=sigma_axial)
    field_im = cv2.GaussianBlur(field_im, (0, 0), sigmaX=sigma_lateral, sigmaY=sigma_axial)
    envelope = cv2.magnitude(field_re, field_im) * unit_energy
    depth, _ = _grid(size)
    envelope *= np.exp(-case.tissue["attenuation"] * pose.attenuation_jitter * depth)
    dyn = case.tissue["dynamic_range"]
    decibel = 20.0 * np.log10(envelope + 1e-6)
    gray = (decibel - pose.top_db + dyn) * (255.0 / dyn)
    image = np.clip(gray, 0, 255).astype(np.uint8)
    return image, (mask.astype(np.uint8) * 255)
