"""Benchmark of the contrastive losses against the network's own cost (``python Code/bench.py losses``).

Times forward + backward on CPU, median over ``--runs`` after ``--warmup`` runs:
* PixelContrastLoss on embeddings 8×256×28×28 (1/8 of 224²), label maps 224×224 with one elliptic lesion of
  ~15 % of each image and ~10 % ignored pixels (a ring around the lesion boundary, as the dual threshold leaves
  it, plus scattered pixels), and a prediction shifted against the labels (hard pixels); without and with a
  pixel bank of 2×2000 entries;
* SupConLoss on 8×2×128 (two views), without and with an image bank of 2×256 entries;
* for scale, HermesNet(resnet34) forward + backward at batch 16, 224×224 (``--model-runs``, default 1, after
  one warm-up run; ``--model-runs 0`` skips it).
For reference, the public code's pixel contrast takes 33 ms (forward + backward) at this shape on 2 cores.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Callable, List, Optional, Sequence

import torch
import torch.nn.functional as F

if __package__ in (None, ""):
    import _bootstrap  # noqa: F401  (repository root on sys.path for a direct run)

from Code.losses import MemoryBank, PixelContrastLoss, SupConLoss

REFERENCE_PIXEL_CONTRAST_MS = 33.0


def realistic_label_maps(batch: int = 8, size: int = 224, seed: int = 0):
    """Labels (−1 ignore / 0 / 1) and a shifted prediction, B×size×size, one lesion of ~15 % per image."""
    gen = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size, dtype=torch.float32), torch.arange(size, dtype=torch.float32),
                            indexing="ij")
    labels, predict = [], []
    for _ in range(batch):
        cy, cx = (size * (0.35 + 0.3 * torch.rand(2, generator=gen))).tolist()
        ry, rx = 0.21 * size, 0.28 * size  # π·ry·rx ≈ 0.185·size², ~0.15 after the ignored ring
        radius = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2
        label = (radius < 1).long()
        ignored = ((radius - 1).abs() < 0.15) | (torch.rand(size, size, generator=gen) < 0.05)
        labels.append(label.masked_fill(ignored, -1))
        shifted = ((yy - cy - 10) / ry) ** 2 + ((xx - cx + 8) / rx) ** 2
        predict.append((shifted < 1).long())
    return torch.stack(labels), torch.stack(predict)


def median_ms(step: Callable[[], None], runs: int, warmup: int) -> float:
    for _ in range(warmup):
        step()
    times: List[float] = []
    for _ in range(runs):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return 1000.0 * statistics.median(times)


def bench_pixel_contrast(runs: int, warmup: int, with_bank: bool) -> float:
    torch.manual_seed(0)
    embed = F.normalize(torch.randn(8, 256, 28, 28), dim=1).requires_grad_()
    labels, predict = realistic_label_maps()
    criterion = PixelContrastLoss()
    bank = None
    if with_bank:
        bank = MemoryBank(2, 2000, 256)
        bank.enqueue(F.normalize(torch.randn(4000, 256), dim=1), torch.arange(4000) % 2)

    def step():
        embed.grad = None
        criterion(embed, labels, predict, bank=bank).backward()

    return median_ms(step, runs, warmup)


def bench_supcon(runs: int, warmup: int, with_bank: bool) -> float:
    torch.manual_seed(0)
    features = F.normalize(torch.randn(8, 2, 128), dim=2).requires_grad_()
    labels, weights = torch.randint(0, 2, (8,)), (torch.rand(8) > 0.3).float()
    bank_features = bank_labels = None
    if with_bank:
        bank_features, bank_labels = F.normalize(torch.randn(512, 128), dim=1), torch.arange(512) % 2
    criterion = SupConLoss()

    def step():
        features.grad = None
        criterion(features, labels, weights, bank_features, bank_labels).backward()

    return median_ms(step, runs, warmup)


def bench_model(runs: int) -> List[float]:
    from Code.models import HermesNet
    torch.manual_seed(0)
    net = HermesNet(encoder_name="resnet34", ias=True, saliency=True).train()
    x = torch.randn(16, 1, 224, 224)
    times = []
    for _ in range(runs + 1):  # the first run is a warm-up
        start = time.perf_counter()
        out = net(x)
        sum(v.float().mean() for v in out.values()).backward()
        net.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - start)
    return [1000.0 * t for t in times[1:]]


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.py losses", description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30, help="timed runs per loss (median reported)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed runs before timing")
    parser.add_argument("--model-runs", type=int, default=1, help="timed HermesNet runs (0 skips the model)")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    args = parser.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    print(f"CPU, {torch.get_num_threads()} threads, torch {torch.__version__}; forward + backward, "
          f"median of {args.runs} runs after {args.warmup} warm-up runs")
    pixel = bench_pixel_contrast(args.runs, args.warmup, with_bank=False)
    print(f"PixelContrastLoss (8, 256, 28, 28), 1024 anchors:         {pixel:8.1f} ms "
          f"(public code: {REFERENCE_PIXEL_CONTRAST_MS:.0f} ms on 2 cores)")
    pixel_bank = bench_pixel_contrast(args.runs, args.warmup, with_bank=True)
    print(f"PixelContrastLoss (8, 256, 28, 28) + bank 2x2000:          {pixel_bank:8.1f} ms")
    print(f"SupConLoss (8, 2, 128):                                      "
          f"{bench_supcon(args.runs, args.warmup, with_bank=False):8.2f} ms")
    print(f"SupConLoss (8, 2, 128) + bank 2x256:                         "
          f"{bench_supcon(args.runs, args.warmup, with_bank=True):8.2f} ms")
    if args.model_runs > 0:
        model_ms = bench_model(args.model_runs)
        print(f"HermesNet resnet34 (ias+saliency), batch 16, 224x224:        "
              f"{statistics.median(model_ms):8.0f} ms  (runs: {', '.join(f'{t:.0f}' for t in model_ms)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
