"""Benchmark of the contrastive losses against the network's own cost (``python Code/bench.py losses``).

Times forward + backward on CPU, median over ``--runs`` after ``--warmup`` runs:
* PixelContrastLoss on embeddings 8×256×28×28 (1/8 of 224²), label maps 224×224 with one elliptic lesion of
  ~15 % of each image and ~10 % ignored pixels (a ring around the lesion boundary, as the dual threshold leaves
  it, plus scattered pixels), and a prediction shifted against the labels (hard pixels); without and with a
  pixel bank of 2×2000 entries; and, interleaved with ours for a fair comparison on a busy machine, the same
  loss written with a Python loop over (image, class) pairs (as the public code does);
* SupConLoss on 8×2×128 (two views), without and with an image bank of 2×256 entries;
* for scale, HermesNet(resnet34) forward + backward at batch 16, 224×224 (``--model-runs``, default 1, after
  one warm-up run; ``--model-runs 0`` skips it).
With torch's default thread count above 1, the losses are timed again with one thread: on a shared machine another
busy process stalls every multi-threaded operator, which inflates small-operator workloads like these most.
For reference, the public code's pixel contrast takes 33 ms (forward + backward) at this shape on 2 cores.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time
from typing import Callable, Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F

from Code.errors import UserError
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


def median_ms(steps: Dict[str, Callable[[], None]], runs: int, warmup: int) -> Dict[str, float]:
    """Median milliseconds of each step; the steps are interleaved so that background load hits them alike."""
    for _ in range(warmup):
        for step in steps.values():
            step()
    times: Dict[str, List[float]] = {name: [] for name in steps}
    for _ in range(runs):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - start)
    return {name: 1000.0 * statistics.median(values) for name, values in times.items()}


def looped_pixel_contrast(embed, labels, predict, max_samples=1024, max_views=100, min_pixels=10, temperature=0.07):
    """The same loss written the straightforward way (for timing only): a Python loop over (image, class) pairs
    with nonzero + randperm sampling, then a mask-based supervised contrastive loss."""
    size = embed.shape[-2:]
    labels = F.interpolate(labels[:, None].float(), size=size, mode="nearest").long().flatten(1)
    predict = F.interpolate(predict[:, None].float(), size=size, mode="nearest").long().flatten(1)
    feats = embed.flatten(2).transpose(1, 2)  # B×P×D
    pairs = [(b, c) for b in range(labels.shape[0]) for c in (0, 1) if int((labels[b] == c).sum()) >= min_pixels]
    n_view = min(max_samples // max(len(pairs), 1), max_views)
    anchors, anchor_labels = [], []
    for b, c in pairs:
        hard = ((labels[b] == c) & (predict[b] != c)).nonzero().squeeze(1)
        easy = ((labels[b] == c) & (predict[b] == c)).nonzero().squeeze(1)
        n_hard = min(len(hard), max(n_view // 2, n_view - len(easy)))
        n_easy = min(len(easy), n_view - n_hard)
        index = torch.cat([hard[torch.randperm(len(hard))[:n_hard]], easy[torch.randperm(len(easy))[:n_easy]]])
        anchors.append(feats[b, index])
        anchor_labels.append(torch.full((len(index),), c))
    x, y = torch.cat(anchors), torch.cat(anchor_labels)
    logits = x @ x.T / temperature
    logits = logits - logits.max(dim=1, keepdim=True).values.detach()
    not_self = ~torch.eye(len(x), dtype=torch.bool)
    positive = (y[:, None] == y[None, :]) & not_self
    log_prob = logits - torch.log((torch.exp(logits) * not_self).sum(dim=1, keepdim=True))
    num_positive = positive.sum(dim=1)
    mean_log_prob_pos = (positive * log_prob).sum(dim=1) / num_positive.clamp_min(1)
    return -mean_log_prob_pos[num_positive > 0].mean()


def bench_pixel_contrast(runs: int, warmup: int) -> Dict[str, float]:
    torch.manual_seed(0)
    embed = F.normalize(torch.randn(8, 256, 28, 28), dim=1).requires_grad_()
    labels, predict = realistic_label_maps()
    criterion = PixelContrastLoss()
    bank = MemoryBank(2, 2000, 256)
    bank.enqueue(F.normalize(torch.randn(4000, 256), dim=1), torch.arange(4000) % 2)

    def step(loss_fn, **kwargs):
        def run():
            embed.grad = None
            loss_fn(embed, labels, predict, **kwargs).backward()
        return run

    return median_ms({"ours": step(criterion), "looped": step(looped_pixel_contrast),
                      "ours_bank": step(criterion, bank=bank)}, runs, warmup)


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

    return median_ms({"supcon": step}, runs, warmup)["supcon"]


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


def print_loss_times(runs: int, warmup: int) -> None:
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"CPU, {torch.get_num_threads()} thread(s), load average {load} (other processes slow every number "
          f"down); forward + backward, median of {runs} runs after {warmup} warm-up runs")
    pixel = bench_pixel_contrast(runs, warmup)
    print(f"  PixelContrastLoss (8, 256, 28, 28), 1024 anchors:   {pixel['ours']:8.1f} ms "
          f"(public code: {REFERENCE_PIXEL_CONTRAST_MS:.0f} ms on 2 cores)")
    print(f"    the same loss with a Python loop over pairs:      {pixel['looped']:8.1f} ms "
          f"(interleaved runs; ours is {pixel['looped'] / pixel['ours']:.1f}x as fast)")
    print(f"  PixelContrastLoss + pixel bank 2x2000:              {pixel['ours_bank']:8.1f} ms")
    print(f"  SupConLoss (8, 2, 128):                             {bench_supcon(runs, warmup, False):8.2f} ms")
    print(f"  SupConLoss (8, 2, 128) + image bank 2x256:          {bench_supcon(runs, warmup, True):8.2f} ms")


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.py losses", description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30, help="timed runs per loss (median reported)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed runs before timing")
    parser.add_argument("--model-runs", type=int, default=1, help="timed HermesNet runs (0 skips the model)")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch intra-op threads; 0 (default): torch's default, then the losses again with 1 "
                             "thread (robust on a shared, busy machine)")
    args = parser.parse_args(argv)
    if args.runs < 1 or args.warmup < 0 or args.model_runs < 0 or args.threads < 0:
        raise UserError("bench losses: --runs must be >= 1 and --warmup, --model-runs, --threads >= 0")
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    print(f"torch {torch.__version__}")
    print_loss_times(args.runs, args.warmup)
    if args.model_runs > 0:
        model_ms = bench_model(args.model_runs)
        print(f"  HermesNet resnet34 (ias+saliency), batch 16, 224x224: {statistics.median(model_ms):8.0f} ms  "
              f"(runs after one warm-up: {', '.join(f'{t:.0f}' for t in model_ms)})")
    if args.threads == 0 and threads > 1:
        torch.set_num_threads(1)
        print_loss_times(args.runs, args.warmup)
        torch.set_num_threads(threads)
    return 0

