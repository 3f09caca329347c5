"""Data-loading benchmark: Hermes' SplitDataset vs a naive loader doing the same work the public code's way.

    python Code/bench.py data [--size 224] [--n 200] [--batch 8]

Both run single-threaded (num_workers=0, one torch/OpenCV thread) over a small phantom split made in a temporary
folder, for the three modes: labeled (image + mask, weak geometry), unlabeled (weak + strong view), eval (resize).
The naive loader: PIL open, ``scipy.ndimage.zoom`` resize (bilinear image, nearest mask), ``ndimage.rotate`` and
numpy flips for the geometry, numpy/scipy photometric ops for the strong view, per sample.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Optional, Sequence

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from Code.data import SplitDataset, normalize_to_tensor, read_labeled_list, read_unlabeled_list
from Code.DataProcess.make_phantom import generate_phantom
from Code.DataProcess.splitting import split_dataset

MODES = {"labeled": "train/{n}/labeled", "unlabeled": "train/{n}/unlabeled", "eval": "test"}


class NaiveDataset(Dataset):
    """Per-sample PIL + scipy.ndimage pipeline (the reference's style), same outputs as SplitDataset."""

    def __init__(self, part_dir: Path, mode: str, size: int):
        self.part_dir, self.mode, self.size = Path(part_dir), mode, size
        if mode == "unlabeled":
            self.entries = [(n, None, 0) for n in read_unlabeled_list(self.part_dir / "unlabeled.txt")]
        else:
            self.entries = read_labeled_list(self.part_dir / "labeled.txt")

    def __len__(self) -> int:
        return len(self.entries)

    def _open(self, folder: str, name: str) -> np.ndarray:
        from PIL import Image
        with Image.open(self.part_dir / folder / name) as handle:
            return np.array(handle.convert("L"), dtype=np.float32)

    def _zoom(self, array: np.ndarray, order: int) -> np.ndarray:
        from scipy import ndimage
        h, w = array.shape
        return ndimage.zoom(array, (self.size / h, self.size / w), order=order)

    def _geometry(self, arrays, rng):
        from scipy import ndimage
        angle = rng.uniform(-10, 10)
        flip = rng.random() < 0.5
        out = []
        for array, order in arrays:
            array = ndimage.rotate(array, angle, order=order, reshape=False)
            out.append(np.flip(array, axis=1).copy() if flip else array)
        return out

    def _photometric(self, image: np.ndarray, rng) -> np.ndarray:
        from scipy import ndimage
        x = image / 255.0
        x = (x - x.mean()) * rng.uniform(0.7, 1.3) + x.mean() + rng.uniform(-0.15, 0.15)
        x = np.clip(x, 0, 1) ** rng.uniform(0.7, 1.5)
        x = x * (1 + rng.uniform(0.05, 0.3) * rng.standard_normal(x.shape))
        x = ndimage.gaussian_filter(x, rng.uniform(0.3, 1.5))
        return np.clip(x, 0, 1).astype(np.float32)

    def __getitem__(self, index: int):
        rng = np.random.default_rng(index)
        name, mask_name, label = self.entries[index]
        image = self._zoom(self._open("image", name), order=1)
        if self.mode == "unlabeled":
            (weak,) = self._geometry([(image, 1)], rng)
            return normalize_to_tensor(weak / 255.0, 1), normalize_to_tensor(self._photometric(weak, rng), 1)
        mask = (self._zoom(self._open("mask", mask_name), order=0) > 127).astype(np.int64)
        if self.mode == "labeled":
            image, mask = self._geometry([(image, 1), (mask.astype(np.float32), 0)], rng)
        return normalize_to_tensor(image / 255.0, 1), torch.from_numpy(mask.astype(np.int64)), torch.tensor(label)


def _throughput(make_dataset, n: int, batch: int) -> tuple:
    """(construction seconds, samples/s) for `n` samples (cycling the dataset) through a DataLoader with
    num_workers=0; the construction (where SplitDataset decodes its cache) is timed apart."""
    start = time.perf_counter()
    dataset = make_dataset()
    built = time.perf_counter()
    indices = [i % len(dataset) for i in range(n)]
    for _ in DataLoader(torch.utils.data.Subset(dataset, indices), batch_size=batch, num_workers=0):
        pass
    return built - start, n / (time.perf_counter() - built)


def run_data_benchmark(args: argparse.Namespace) -> dict:
    """{mode: {"hermes", "hermes_no_cache", "naive": samples/s; "ratio", "ratio_no_cache": vs naive;
    "cache_seconds": SplitDataset's one-time decoding}} plus "size" and "n"."""
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    results = {"size": args.size, "n": args.n}
    with tempfile.TemporaryDirectory(prefix="hermes_bench_data_") as tmp:
        per_class = max(20, args.n // 2)
        generate_phantom(Path(tmp) / "raw", n_benign=per_class, n_malignant=per_class, size=256, seed=0)
        n_labels = 2 * max(2, round(0.35 * per_class))  # about half of each class's train images
        split_dataset("sztus", Path(tmp) / "raw", Path(tmp) / "split", [n_labels], seed=0)
        for mode, pattern in MODES.items():
            part = Path(tmp) / "split" / pattern.format(n=n_labels)
            cache_seconds, fast = _throughput(lambda: SplitDataset(part, mode, size=args.size), args.n, args.batch)
            _, uncached = _throughput(lambda: SplitDataset(part, mode, size=args.size, cache=False), args.n,
                                      args.batch)
            _, naive = _throughput(lambda: NaiveDataset(part, mode, args.size), args.n, args.batch)
            results[mode] = {"hermes": fast, "hermes_no_cache": uncached, "naive": naive, "ratio": fast / naive,
                             "ratio_no_cache": uncached / naive, "cache_seconds": cache_seconds,
                             "images": len(SplitDataset(part, mode, size=args.size, cache=False))}
    return results


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bench.py data", description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=224, help="output side")
    parser.add_argument("--n", type=int, default=200, help="samples per mode and loader")
    parser.add_argument("--batch", type=int, default=8)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    results = run_data_benchmark(args)
    print(f"data loading, {args.size}x{args.size}, {args.n} samples per mode, num_workers=0, 1 thread")
    print(f"{'mode':<11}{'hermes/s':>10}{'naive/s':>9}{'ratio':>8}{'no-cache/s':>12}{'ratio':>8}{'cache fill':>18}")
    for mode in MODES:
        r = results[mode]
        fill = f"{r['cache_seconds']:.2f} s/{r['images']} img"
        print(f"{mode:<11}{r['hermes']:>10.0f}{r['naive']:>9.0f}{r['ratio']:>7.1f}x{r['hermes_no_cache']:>12.0f}"
              f"{r['ratio_no_cache']:>7.1f}x{fill:>18}")
    print("hermes: SplitDataset, images decoded once when it is built (the 'cache fill', paid once per run);"
          " no-cache: cache=False, decoding every sample like the naive loader")
    return 0

