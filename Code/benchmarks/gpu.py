"""GPU check: ``python Code/bench.py gpu [--iters 300] [--tiny-cpu]`` (``make gpu-check``).

On CUDA: ``--iters`` Hermes training iterations at the paper's size (``configs/paper.yaml``: 224×224, resnet34 from
scratch, batch 8 labeled + 8 unlabeled, mixed precision, channels-last) on synthetic lesion images, once eager and
once with ``torch.compile``; per variant one line with images/s (labeled + unlabeled, after 20 warm-up
iterations), peak GPU memory, the loss curve's first and last values (mean of the first / last 10 iterations) and
the wall time; then ``bench.py train --device cuda``. Exit status 1 if a loss is not finite. Without CUDA it says so
in one line and exits 0. ``--tiny-cpu`` runs the same code on the CPU at toy size (the test suite's check).
Budget: about 2–4 minutes on one modern GPU, most of it ``torch.compile``.
"""
from __future__ import annotations

import argparse
import math
import time
from contextlib import nullcontext
from typing import Any, Dict, Optional, Sequence

import torch

from Code.engine.builders import build_model, build_optimizers
from Code.engine.config import CONFIG_DIR, load_config
from Code.engine.runtime import amp_dtype, apply_gradients, seed_everything
from Code.errors import UserError
from Code.methods import build_method

TINY = {"data": {"size": 64}, "train": {"batch_labeled": 2, "batch_unlabeled": 2},
        "model": {"encoder_name": "tu-test_resnet", "decoder_channels": [32, 16, 16, 8, 8], "pixel_embed_dim": 32,
                  "image_embed_dim": 16, "consist_dim": 16},
        "contrast": {"image_bank_size": 16, "pixel_bank_size": 64, "max_samples": 64, "max_views": 8,
                     "min_pixels": 2}}
WARMUP = 20


def check_config(tiny: bool) -> Dict[str, Any]:
    """The paper's setting (or the toy one), Hermes, no downloaded weights, contrast from the first iteration."""
    overrides = [{"method": "hermes", "model": {"encoder_weights": None}, "ssl": {"contrast_warmup": 0}}]
    return load_config(str(CONFIG_DIR / "paper.yaml"), overrides=overrides + ([TINY] if tiny else []))


def run_variant(config: Dict[str, Any], device: torch.device, iters: int, compiled: bool) -> Dict[str, Any]:
    """Train ``iters`` iterations on a fixed pool of synthetic batches; return throughput, memory and loss ends."""
    from Code.benchmarks.train import synthetic_batch

    seed_everything(0)
    model = build_model(config).to(device)
    channels_last = device.type == "cuda" and config["train"]["channels_last"]
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizers = build_optimizers(model, config)
    runnable = torch.compile(model, backend="inductor" if device.type == "cuda" else "eager") if compiled else model
    method = build_method(config, device, model)
    dtype = amp_dtype(config, device)
    scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)
    gen = torch.Generator().manual_seed(0)
    b, size, chans = config["train"]["batch_labeled"], config["data"]["size"], config["data"]["in_channels"]
    memory = torch.channels_last if channels_last else torch.contiguous_format
    pool = []
    for _ in range(8):
        x, mask, label = synthetic_batch(b, size, chans, device, gen)
        weak = synthetic_batch(config["train"]["batch_unlabeled"], size, chans, device, gen)[0]
        strong = weak + 0.1 * torch.randn_like(weak)
        pool.append(((x.contiguous(memory_format=memory), mask, label),
                     (weak.contiguous(memory_format=memory), strong.contiguous(memory_format=memory))))
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    losses = []
    start = time.perf_counter()
    timed_from: Optional[float] = None
    for i in range(iters):
        if i == min(WARMUP, iters - 1):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            timed_from = time.perf_counter()
        labeled, unlabeled = pool[i % len(pool)]
        with torch.autocast("cuda", dtype=dtype) if dtype is not None else nullcontext():
            loss, _, _ = method.step(runnable, labeled, unlabeled, i)
        apply_gradients(loss, scaler, optimizers, [], 0.0)
        method.after_step(model, i)
        losses.append(loss.detach().float())
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    end = time.perf_counter()
    curve = torch.stack(losses).cpu()
    timed = iters - min(WARMUP, iters - 1)
    images = b + config["train"]["batch_unlabeled"]
    k = min(10, iters)
    return {"iters": iters, "images_per_sec": timed * images / max(end - timed_from, 1e-9),
            "peak_gpu_gib": torch.cuda.max_memory_allocated(device) / 2 ** 30 if device.type == "cuda" else None,
            "loss_first": float(curve[:k].mean()), "loss_last": float(curve[-k:].mean()),
            "finite": bool(torch.isfinite(curve).all()), "seconds": end - start}


def format_result(name: str, r: Dict[str, Any]) -> str:
    memory = f"peak GPU memory {r['peak_gpu_gib']:.2f} GiB" if r["peak_gpu_gib"] is not None else "CPU"
    return (f"{name:<9} {r['iters']} iterations, {r['images_per_sec']:.1f} images/s, {memory}, loss "
            f"{r['loss_first']:.4f} → {r['loss_last']:.4f} (mean of the first / last 10 iterations), "
            f"{r['seconds']:.0f} s")


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=300, help="training iterations per variant (default 300)")
    parser.add_argument("--tiny-cpu", action="store_true", help="toy size on the CPU (tests the check itself)")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile variant")
    args = parser.parse_args(argv)
    if args.iters < 2:
        raise UserError("--iters must be at least 2")
    if not args.tiny_cpu and not torch.cuda.is_available():
        print(f"gpu-check: no CUDA device on this machine (torch {torch.__version__}); nothing to check")
        return 0
    device = torch.device("cpu") if args.tiny_cpu else torch.device("cuda")
    config = check_config(args.tiny_cpu)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        name = torch.cuda.get_device_name(device)
    else:
        name = "CPU (tiny mode)"
    dtype = amp_dtype(config, device)
    print(f"gpu-check on {name}, torch {torch.__version__}, {config['model']['encoder_name']} "
          f"{config['data']['size']}², batch {config['train']['batch_labeled']} + {config['train']['batch_unlabeled']}, "
          f"{str(dtype).replace('torch.', '') if dtype else 'fp32'}, channels-last "
          f"{device.type == 'cuda' and config['train']['channels_last']}", flush=True)
    results = {"eager": run_variant(config, device, args.iters, compiled=False)}
    print(format_result("eager:", results["eager"]), flush=True)
    if not args.no_compile:
        results["compiled"] = run_variant(config, device, args.iters, compiled=True)
        print(format_result("compiled:", results["compiled"]), flush=True)
    from Code.benchmarks.train import main as bench_train

    train_args = ["--device", device.type] + (["--encoder", "tu-test_resnet", "--size", "64", "--batch", "2",
                                               "--steps", "1"] if args.tiny_cpu else [])
    print(f"bench.py train {' '.join(train_args)}:", flush=True)
    bench_train(train_args)
    bad = [k for k, r in results.items() if not r["finite"] or math.isnan(r["loss_last"])]
    if bad:
        raise UserError(f"gpu-check: non-finite loss in the {', '.join(bad)} run")
    return 0
