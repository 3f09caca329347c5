"""Pre-training benchmark: ``python Code/bench.py pretrain [--batch B] [--size S] [--steps K] [--device D] [--set ...]``.

Times full MoCo v2 steps (momentum update, query forward + backward, shuffled key forward, InfoNCE against the
queue, optimiser step, enqueue: :func:`Code.pretraining.trainer.moco_step`) on synthetic tensors, with the
settings of configs/pretrain.yaml (``--set`` overrides any key, e.g. ``model.encoder_name=resnet34``), so that the
figure measures the model and the objective, not the disk. Prints one JSON line: ``sec_per_iter`` (median after
2 warm-up steps), ``images_per_sec`` (images, each seen in two views), ``peak_rss_mb``, ``peak_cuda_mb`` (GPU only).
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import time
from typing import Optional, Sequence

import torch

from Code.engine.config import parse_set_option
from Code.engine.runtime import amp_dtype, seed_everything
from Code.errors import UserError
from Code.pretraining.config import load_pretrain_config
from Code.pretraining.moco import KeyQueue, ProjectionBranch, make_key_branch
from Code.pretraining.trainer import build_optimizer, moco_step


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, help="images per step (default: pretrain.batch)")
    parser.add_argument("--size", type=int, help="image side (default: data.size)")
    parser.add_argument("--steps", type=int, default=10, help="timed steps (after 2 warm-up steps)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for, but CUDA is not available on this machine")
    if args.steps <= 0:
        raise UserError(f"--steps must be positive, got {args.steps}")
    device = torch.device("cuda" if args.device != "cpu" and torch.cuda.is_available() else "cpu")
    flags = {"data": {"size": args.size} if args.size else {}, "pretrain": {"batch": args.batch} if args.batch else {}}
    config = load_pretrain_config(None, [flags] + [parse_set_option(s) for s in args.set])
    data, pre = config["data"], config["pretrain"]
    seed_everything(config["seed"])
    query = ProjectionBranch(config["model"]["encoder_name"], data["in_channels"], pre["proj_hidden"],
                             pre["proj_dim"], pre["bn_splits"]).to(device)
    channels_last = device.type == "cuda" and pre["channels_last"]
    if channels_last:
        query = query.to(memory_format=torch.channels_last)
    key, queue = make_key_branch(query), KeyQueue(pre["queue_size"], pre["proj_dim"]).to(device)
    optimizer = build_optimizer(query.parameters(), pre)
    dtype = amp_dtype({"train": {"amp": pre["amp"]}}, device)
    scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)
    gen = torch.Generator().manual_seed(0)
    shape = (pre["batch"], data["in_channels"], data["size"], data["size"])
    times = []
    for i in range(args.steps + 2):
        views = [torch.randn(shape, generator=gen).to(device) for _ in range(2)]
        if channels_last:
            views = [v.contiguous(memory_format=torch.channels_last) for v in views]
        ids = torch.arange(i * pre["batch"], (i + 1) * pre["batch"], device=device)
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        moco_step(query, key, queue, optimizer, None, scaler, (views[0], views[1], ids), pre, dtype)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= 2:
            times.append(time.perf_counter() - start)
    sec = statistics.median(times)
    result = {"sec_per_iter": round(sec, 4), "images_per_sec": round(pre["batch"] / sec, 2),
              "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
              "peak_cuda_mb": round(torch.cuda.max_memory_allocated() / 2 ** 20, 1) if device.type == "cuda" else None,
              "encoder": config["model"]["encoder_name"], "objective": "mocov2", "batch": pre["batch"],
              "size": data["size"], "device": str(device),
              "amp": str(dtype).replace("torch.", "") if dtype else "fp32", "threads": torch.get_num_threads()}
    print(json.dumps(result))
    return 0
