"""Run-time helpers of every training loop (the trainers and pre-training): seeding and RNG state, mixed
precision choice, one optimisation step, device transfer."""
from __future__ import annotations

import random
from typing import Any, Dict, Optional

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    torch.manual_seed(seed)


def rng_state() -> Dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def amp_dtype(config: Dict[str, Any], device: torch.device) -> Optional[torch.dtype]:
    """bf16 where the GPU supports it, else fp16; ``None`` (full precision) on CPU or with ``train.amp: false``."""
    if device.type != "cuda" or not config["train"]["amp"]:
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def apply_gradients(loss: torch.Tensor, scaler: torch.amp.GradScaler, optimizers, schedulers, clip: float) -> None:
    """One backward of the total loss, then every optimiser steps (no gradient is computed twice or discarded)."""
    for opt in optimizers:
        opt.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    for opt in optimizers:
        if clip > 0:
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_([p for g in opt.param_groups for p in g["params"]], clip)
        scaler.step(opt)
    scaler.update()
    for sched in schedulers:
        sched.step()


def to_device(batch, device: torch.device, channels_last: bool):
    out = []
    for item in batch:
        item = item.to(device, non_blocking=True)
        if channels_last and item.dim() == 4:
            item = item.contiguous(memory_format=torch.channels_last)
        out.append(item)
    return out
