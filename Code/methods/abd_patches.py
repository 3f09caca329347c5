"""Patch operations of ``abd`` (Code/methods/abd.py): the g×g patch grid, per-patch confidence and mean logits,
the displacement of one patch per image, and ABD-R's choice of the patches to move.

Patch k = (r, c) = (⌊k/g⌋, k mod g) of an H×W image covers rows [r·p_h, (r + 1)·p_h) and columns
[c·p_w, (c + 1)·p_w), p_h = ⌊H/g⌋, p_w = ⌊W/g⌋; K = g² patches. When g does not divide H or W the last rows or
columns belong to no patch and never move (the authors' code requires g·p = H = W).
"""
from __future__ import annotations

from typing import Dict, Tuple

import torch
import torch.nn.functional as F

from Code.errors import UserError

Tensor = torch.Tensor


def patch_size(shape: Tuple[int, int], grid: int) -> Tuple[int, int]:
    """(p_h, p_w) = (⌊H/g⌋, ⌊W/g⌋) for ``shape`` = (H, W)."""
    if shape[0] < grid or shape[1] < grid:
        raise UserError(f"abd.grid {grid} is larger than the image ({shape[0]}x{shape[1]} pixels): at most "
                        f"{min(shape)} patches a side")
    return shape[0] // grid, shape[1] // grid


def patch_means(maps: Tensor, grid: int) -> Tensor:
    """The mean of each channel over each patch: ``maps`` N×C×H×W → N×K×C."""
    ph, pw = patch_size(tuple(maps.shape[-2:]), grid)
    pooled = F.avg_pool2d(maps[..., :grid * ph, :grid * pw].float(), (ph, pw))  # N×C×g×g
    return pooled.flatten(2).transpose(1, 2)


def patch_confidence(probs: Tensor, grid: int) -> Tensor:
    """C (N×K): the mean over each patch of the per-pixel top class probability max_c P; ``probs`` N×C×H×W."""
    return patch_means(probs.max(1, keepdim=True).values, grid)[..., 0]


def _patches(x: Tensor, grid: int) -> Tensor:
    """The covered region of ``x`` (N×C×H×W) as N×C×K×p_h×p_w patches (a view or a copy)."""
    n, c = x.shape[:2]
    ph, pw = patch_size(tuple(x.shape[-2:]), grid)
    region = x[..., :grid * ph, :grid * pw].reshape(n, c, grid, ph, grid, pw)
    return region.permute(0, 1, 2, 4, 3, 5).reshape(n, c, grid * grid, ph, pw)


def displace(a: Tensor, b: Tensor, dst: Tensor, src: Tensor, grid: int) -> Tensor:
    """D(A, B, dst ← src): a copy of ``a`` whose patch dst[n] holds patch src[n] of ``b``, per image n.

    ``a``/``b``: N×C×H×W images (or N×H×W maps); ``dst``/``src``: N patch indices in [0, g²)."""
    maps = a.dim() == 3
    a4, b4 = (a[:, None], b[:, None]) if maps else (a, b)
    n = a4.shape[0]
    ph, pw = patch_size(tuple(a4.shape[-2:]), grid)
    pa, pb = _patches(a4, grid).clone(), _patches(b4, grid)  # clone: the patch view may share a's memory
    rows = torch.arange(n, device=a.device)
    pa[rows, :, dst] = pb[rows, :, src]
    region = pa.reshape(n, a4.shape[1], grid, grid, ph, pw).permute(0, 1, 2, 4, 3, 5)
    out = a4.clone()
    out[..., :grid * ph, :grid * pw] = region.reshape(n, a4.shape[1], grid * ph, grid * pw)
    return out[:, 0] if maps else out


def closest_confident(conf: Tensor, means: Tensor, reference: Tensor, top_k: int) -> Tensor:
    """Per image n, the one of the ``top_k`` most confident patches of ``conf`` (N×K) whose mean-logit class
    distribution softmax(means[n, j]) (``means`` N×K×C) is closest to softmax(reference[n]) (``reference`` N×C):
    argmin over j ∈ top-k of KL(softmax(reference[n]) ‖ softmax(means[n, j])). Returns N patch indices."""
    top = conf.topk(top_k, dim=1).indices  # N×k
    candidates = torch.gather(means, 1, top[..., None].expand(-1, -1, means.shape[-1]))  # N×k×C
    target = reference.log_softmax(-1)[:, None]  # N×1×C
    kl = (target.exp() * (target - candidates.log_softmax(-1))).sum(-1)  # N×k
    return torch.gather(top, 1, kl.argmin(1, keepdim=True))[:, 0]


def reliable_choice(conf_1: Tensor, conf_2: Tensor, means_1: Tensor, means_2: Tensor, top_k: int,
                    use_kl: Tensor) -> Dict[str, Tensor]:
    """ABD-R's four patches per image pair n (module docstring of Code/methods/abd.py): ``b``/``d`` the least
    confident patch of view 1/2; ``a``/``c`` the patch of view 1/2 given away — where ``use_kl[n]`` the top-k
    patch closest (KL of the mean logits) to the other view's least confident patch, else the most confident.
    ``conf_*`` N×K, ``means_*`` N×K×C, ``use_kl`` N bool."""
    rows = torch.arange(conf_1.shape[0], device=conf_1.device)
    b, d = conf_1.argmin(1), conf_2.argmin(1)
    a_kl = closest_confident(conf_1, means_1, means_2[rows, d], top_k)
    c_kl = closest_confident(conf_2, means_2, means_1[rows, b], top_k)
    a = torch.where(use_kl, a_kl, conf_1.argmax(1))
    c = torch.where(use_kl, c_kl, conf_2.argmax(1))
    return {"a": a, "b": b, "c": c, "d": d}


def reliable_displacement(x_1: Tensor, x_2: Tensor, choice: Dict[str, Tensor], grid: int) -> Tensor:
    """The ABD-R sample [A¹; A²] (2N×C×H×W): A¹ = D(X¹, X², b ← c), then A² = D(X², A¹, d ← a) — A² takes its
    patch from the already displaced A¹, as the authors' loop reads it after the first write (so when a = b it
    carries X²'s patch c back). ``x_1``/``x_2``: the two views' N images, pixel-aligned."""
    first = displace(x_1, x_2, choice["b"], choice["c"], grid)
    second = displace(x_2, first, choice["d"], choice["a"], grid)
    return torch.cat([first, second])
