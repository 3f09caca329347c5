"""Training-step benchmark: ``python Code/bench.py train [--method M] [--batch B] [--size S] [--steps K] [--device D]``.

Times full training iterations (forward of the labeled, weak and strong views, every loss of the method, one
backward, both optimiser steps) on synthetic tensors, so that the figure measures the model and losses, not the
disk. Prints one JSON line: ``sec_per_iter`` (median after warm-up), ``images_per_sec`` (labeled + unlabeled),
``peak_rss_mb``, ``peak_cuda_mb`` (GPU only), ``encoder``, ``method``, ``batch``, ``size``.
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import time
from contextlib import nullcontext
from typing import Optional, Sequence

import torch

from Code.engine.builders import build_model, build_optimizers
from Code.engine.config import load_config, parse_set_option
from Code.engine.runtime import amp_dtype, apply_gradients, seed_everything
from Code.errors import UserError
from Code.methods import build_method, method_names


def synthetic_batch(batch: int, size: int, channels: int, device: torch.device, gen: torch.Generator):
    """Images with one bright elliptic blob per image (~15 % of the area) as the lesion."""
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    centre = torch.rand(batch, 2, generator=gen) * 0.8 - 0.4
    mask = (((yy - centre[:, :1, None]) / 0.45) ** 2 + ((xx - centre[:, 1:, None]) / 0.35) ** 2 < 1).long()
    image = torch.randn(batch, channels, size, size, generator=gen) * 0.5 + mask[:, None].float()
    label = torch.randint(0, 2, (batch,), generator=gen)
    return image.to(device), mask.to(device), label.to(device)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", default="hermes", choices=method_names())
    parser.add_argument("--batch", type=int, default=8, help="labeled batch; the unlabeled batch is the same")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--steps", type=int, default=10, help="timed iterations (after 2 warm-up iterations)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--encoder", default="resnet34")
    parser.add_argument("--config", help="config file whose model/loss settings to use (default: base)")
    parser.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for, but CUDA is not available on this machine")
    device = torch.device("cuda" if args.device != "cpu" and torch.cuda.is_available() else "cpu")
    flags = {"method": args.method, "model": {"encoder_name": args.encoder},
             "data": {"size": args.size}, "ssl": {"contrast_warmup": 0},
             "train": {"batch_labeled": args.batch, "batch_unlabeled": args.batch}}
    config = load_config(args.config, overrides=[flags] + [parse_set_option(s) for s in args.set])
    seed_everything(config["seed"])
    model = build_model(config).to(device)
    channels_last = device.type == "cuda" and config["train"]["channels_last"]
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizers = build_optimizers(model, config)
    method = build_method(config, device, model)
    dtype = amp_dtype(config, device)
    scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)
    gen = torch.Generator().manual_seed(0)
    chans = config["data"]["in_channels"]
    times = []
    for i in range(args.steps + 2):
        x, mask, label = synthetic_batch(args.batch, args.size, chans, device, gen)
        weak = synthetic_batch(args.batch, args.size, chans, device, gen)[0]
        strong = weak + 0.1 * torch.randn_like(weak)
        if channels_last:
            x, weak, strong = (t.contiguous(memory_format=torch.channels_last) for t in (x, weak, strong))
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        with torch.autocast("cuda", dtype=dtype) if dtype is not None else nullcontext():
            loss, _, _ = method.step(model, (x, mask, label), (weak, strong), i + 1000)
        apply_gradients(loss, scaler, optimizers, [], 0.0)
        method.after_step(model, i)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= 2:
            times.append(time.perf_counter() - start)
    sec = statistics.median(times)
    n_images = args.batch * (2 if method.uses_unlabeled else 1)
    result = {"sec_per_iter": round(sec, 4), "images_per_sec": round(n_images / sec, 2),
              "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
              "peak_cuda_mb": round(torch.cuda.max_memory_allocated() / 2 ** 20, 1) if device.type == "cuda" else None,
              "encoder": config["model"]["encoder_name"], "method": args.method, "batch": args.batch,
              "size": args.size, "device": str(device), "amp": str(dtype).replace("torch.", "") if dtype else "fp32",
              "threads": torch.get_num_threads()}
    print(json.dumps(result))
    return 0
