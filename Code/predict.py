"""Predict lesion masks and benign/malignant classes for images without labels.

Usage::

    python Code/predict.py --checkpoint RUN/checkpoints/best.pt --images DIR_OR_FILE [DIR_OR_FILE ...]
        [--out DIR] [--force] [--device auto|cpu|cuda] [--batch-size B] [--no-amp] [--no-overlays]

Images of any size, grayscale or colour (png, jpg, jpeg, bmp, tif, tiff; a folder is read non-recursively, a file
named explicitly is tried whatever its extension) are converted to grayscale and resized to the model's input
size like the evaluation data; the lesion mask is brought back to the ORIGINAL size (bilinear lesion probability,
threshold 0.5). Writes to DIR (default ``<run folder of the checkpoint>/predictions``; an existing non-empty DIR
needs ``--force``): ``masks/<stem>.png`` (0/255), ``overlays/<stem>.png`` (image beside the prediction in green)
and ``predictions.csv`` (file, pred_class, prob_benign, prob_malignant, lesion_area_px, mask). An unreadable file
gets a one-line ``error:`` on stderr and the others are still processed; a summary of the failures ends the run
and the exit status is then 1.
"""
from __future__ import annotations

import _bootstrap  # noqa: F401

import argparse
import csv
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from Code.data import CLASS_NAMES, load_gray, preprocess
from Code.errors import UserError, run_cli
from Code.engine.checkpoint import load_model_from_checkpoint
from Code.evaluate import overlay_panel, prepare_out, resolve_device, run_folder_of, safe_stem, write_png

IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}
CSV_COLUMNS = ("file", "pred_class", "prob_benign", "prob_malignant", "lesion_area_px", "mask")


def collect_images(items: Sequence[str]) -> Tuple[List[Path], List[Tuple[str, str]]]:
    """``(image files, [(path, reason)] for paths that do not exist)``; folders give their image files, sorted."""
    files: List[Path] = []
    missing: List[Tuple[str, str]] = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            files.extend(sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTS))
        elif path.is_file():
            files.append(path)
        else:
            missing.append((item, f"image not found: {item}"))
    return list(dict.fromkeys(files)), missing


class UniqueStems:
    """Output file stems that stay unique when inputs share a stem (``a.png``, ``a.jpg`` → ``a``, ``a_jpg``)."""

    def __init__(self) -> None:
        self.used: set = set()

    def __call__(self, path: Path) -> str:
        stem = safe_stem(path.name)
        candidate, n = stem, 1
        if candidate in self.used:
            candidate = f"{stem}_{path.suffix.lstrip('.').lower() or 'file'}"
        while candidate in self.used:
            n += 1
            candidate = f"{stem}_{n}"
        self.used.add(candidate)
        return candidate


def read_batch(paths: Sequence[Path], size: int, in_channels: int, failures: List[Tuple[str, str]]
               ) -> Tuple[List[Path], List[np.ndarray], List[torch.Tensor]]:
    """Decode and preprocess ``paths``; an unreadable file is reported on stderr and added to ``failures``."""
    ok_paths, grays, tensors = [], [], []
    for path in paths:
        try:
            gray = load_gray(path)
            tensor = preprocess(gray, size, in_channels)
        except (UserError, cv2.error, ValueError) as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            print(f"error: {reason}", file=sys.stderr)
            failures.append((str(path), reason))
            continue
        ok_paths.append(path)
        grays.append(gray)
        tensors.append(tensor)
    return ok_paths, grays, tensors


def lesion_mask(seg_probs: torch.Tensor, height: int, width: int) -> np.ndarray:
    """Lesion mask {0, 1} uint8 (height×width) from one image's 2×S×S softmax, resized bilinearly."""
    lesion = seg_probs[1:2].unsqueeze(0)
    if lesion.shape[-2:] != (height, width):
        lesion = F.interpolate(lesion, size=(height, width), mode="bilinear", align_corners=False)
    return (lesion[0, 0] > 0.5).to(torch.uint8).cpu().numpy()


def predict_files(model: torch.nn.Module, config: Dict, files: Sequence[Path], out: Path, device: torch.device,
                  batch_size: int, amp: bool, overlays: bool, failures: List[Tuple[str, str]]) -> List[Dict]:
    """Run the model on ``files`` in batches; write masks (and overlays); return the rows of predictions.csv."""
    from Code.engine.evaluation import predict_batch

    size, channels = config["data"]["size"], config["data"]["in_channels"]
    (out / "masks").mkdir(exist_ok=True)
    if overlays:
        (out / "overlays").mkdir(exist_ok=True)
    stems, rows = UniqueStems(), []
    for start in range(0, len(files), batch_size):
        paths, grays, tensors = read_batch(files[start:start + batch_size], size, channels, failures)
        if not paths:
            continue
        seg_probs, cls_probs = predict_batch(model, torch.stack(tensors).to(device), amp)
        for i, (path, gray) in enumerate(zip(paths, grays)):
            mask = lesion_mask(seg_probs[i], *gray.shape[:2])
            stem = stems(path)
            write_png(out / "masks" / f"{stem}.png", mask * 255)
            prob_b, prob_m = (float(p) for p in cls_probs[i].cpu())
            pred = int(prob_m > prob_b)
            area = int(mask.sum())
            if overlays:
                caption = f"{path.name} | pred {CLASS_NAMES[pred]} p(mal)={prob_m:.2f} | lesion {area} px"
                write_png(out / "overlays" / f"{stem}.png", overlay_panel(gray, mask, None, caption))
            rows.append({"file": str(path), "pred_class": pred, "prob_benign": prob_b, "prob_malignant": prob_m,
                         "lesion_area_px": area, "mask": f"masks/{stem}.png"})
    return rows


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Predict lesion masks and classes for unlabeled images.")
    parser.add_argument("--checkpoint", required=True, help="RUN/checkpoints/best.pt or latest.pt")
    parser.add_argument("--images", nargs="+", required=True, help="image files and/or folders of images")
    parser.add_argument("--out", help="output folder (default: <run folder>/predictions)")
    parser.add_argument("--force", action="store_true", help="write into an existing non-empty output folder")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--no-amp", action="store_true", help="full precision on CUDA")
    parser.add_argument("--no-overlays", action="store_true", help="write masks and the CSV only")
    args = parser.parse_args(argv)
    if args.batch_size <= 0:
        raise UserError("--batch-size must be positive")
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    device = resolve_device(args.device)
    checkpoint = Path(args.checkpoint)
    if not checkpoint.is_file():
        raise UserError(f"checkpoint not found: {checkpoint}")
    files, failures = collect_images(args.images)
    for _, reason in failures:
        print(f"error: {reason}", file=sys.stderr)
    if not files:
        raise UserError(f"no image files ({', '.join(sorted(IMAGE_EXTS))}) in {' '.join(args.images)}")
    out = prepare_out(Path(args.out) if args.out else run_folder_of(checkpoint) / "predictions", args.force)
    model, config, _ = load_model_from_checkpoint(checkpoint, device)
    rows = predict_files(model, config, files, out, device, args.batch_size,
                         amp=device.type == "cuda" and not args.no_amp, overlays=not args.no_overlays,
                         failures=failures)
    with (out / "predictions.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    total = len(rows) + len(failures)
    print(f"predicted {len(rows)} of {total} images; wrote {out}")
    if failures:
        print(f"{len(failures)} of {total} images failed:", file=sys.stderr)
        for _, reason in failures:
            print(f"  - {reason}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    run_cli(main)
