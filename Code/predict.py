"""Predict lesion masks and benign/malignant classes for images without labels.

Usage::

    python Code/predict.py --checkpoint RUN/checkpoints/best.pt --images DIR_OR_FILE [DIR_OR_FILE ...]
        [--out DIR] [--force] [--device auto|cpu|cuda] [--batch-size B] [--no-amp] [--no-overlays]
        [--calibration [FILE]]
    python Code/predict.py --model FILE.onnx|FILE.ts --images DIR_OR_FILE [...] [--out DIR] [--force] [...]

Images of any size, grayscale or colour (png, jpg, jpeg, bmp, tif, tiff; a folder is read non-recursively, a file
named explicitly is tried whatever its extension) are converted to grayscale and resized to the model's input
size like the evaluation data; the lesion mask is brought back to the ORIGINAL size (bilinear lesion probability,
threshold 0.5). Writes to DIR (default ``<run folder of the checkpoint>/predictions``, with ``--model``
``<model folder>/predictions``; an earlier output of predict.py is replaced as a whole only with ``--force``, README
"Outputs and --force"): ``masks/<stem>.png`` (0/255),
``overlays/<stem>.png`` (image beside the prediction in green), ``entropy/<stem>.png`` (image beside its
per-pixel predictive entropy, resized to the original size) and ``predictions.csv`` (file, pred_class,
prob_benign, prob_malignant, lesion_area_px, mask, class_entropy, lesion_entropy, review; entropies normalised to
[0, 1], see ``inference/uncertainty.py``, and computed at the model's input size like ``evaluate.py`` and the
thresholds, so that both scripts flag the same images). ``review`` is 1 when the class entropy or the mean
entropy on the predicted lesion exceeds its threshold chosen on val, 0 otherwise, and empty without thresholds:
they come with ``--calibration`` (``<checkpoint stem>.calibration.json`` of ``evaluate.py --calibrate``, or FILE,
fitted on this checkpoint file; it also applies its temperature) or from an exported model's metadata. ``--model`` runs a file of ``export.py`` (ONNX
with ONNX Runtime, TorchScript with PyTorch; CPU). An unreadable file gets a one-line ``error:`` on stderr and
the others are still processed; a summary of the failures ends the run and the exit status is then 1.
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
from Code.inference.loading import load_model_from_checkpoint
from Code.inference.uncertainty import image_uncertainty, review_flags
from Code.evaluate import prepare_out, resolve_device, run_folder_of
from Code.outputs import FORCE_HELP
from Code.reporting.figures import overlay_panel, safe_stem, write_png
from Code.reporting.uncertainty_figures import entropy_panel

IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}
CSV_COLUMNS = ("file", "pred_class", "prob_benign", "prob_malignant", "lesion_area_px", "mask",
               "class_entropy", "lesion_entropy", "review")


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


def resize_map(values: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """An S×S map (float) resized bilinearly to height×width (returned as is when it already has that size)."""
    values = values[None, None].float()
    if values.shape[-2:] != (height, width):
        values = F.interpolate(values, size=(height, width), mode="bilinear", align_corners=False)
    return values[0, 0].cpu()


def lesion_probability(seg_probs: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Lesion probability (height×width float) from one image's 2×S×S softmax, resized bilinearly."""
    return resize_map(seg_probs[1], height, width)


def lesion_mask(seg_probs: torch.Tensor, height: int, width: int) -> np.ndarray:
    """Lesion mask {0, 1} uint8 (height×width): the resized lesion probability above 0.5."""
    return (lesion_probability(seg_probs, height, width) > 0.5).to(torch.uint8).numpy()


def image_row(path: Path, stem: str, seg_probs: torch.Tensor, cls_probs: torch.Tensor, height: int, width: int,
              thresholds: Optional[Dict[str, float]]) -> Tuple[Dict, np.ndarray, torch.Tensor]:
    """``(predictions.csv row, mask H×W uint8, entropy map H×W)`` of one image (``seg_probs`` 2×S×S and
    ``cls_probs`` K at the model's resolution S). The mask and the entropy map are brought to the original
    height×width; ``class_entropy``, ``lesion_entropy`` and the review flag are computed at S×S, exactly as
    ``evaluate.py`` computes them (and as the thresholds were fitted), so both scripts flag the same images."""
    u = image_uncertainty(seg_probs[None].float(), cls_probs[None].float())
    class_entropy, lesion_entropy = float(u["class_entropy"][0]), float(u["lesion_entropy"][0])
    mask = (lesion_probability(seg_probs, height, width) > 0.5).to(torch.uint8)
    prob_b, prob_m = (float(p) for p in cls_probs)
    review = "" if not thresholds else int(review_flags([class_entropy], [lesion_entropy], thresholds)[0])
    row = {"file": str(path), "pred_class": int(prob_m > prob_b), "prob_benign": prob_b, "prob_malignant": prob_m,
           "lesion_area_px": int(mask.sum()), "mask": f"masks/{stem}.png", "class_entropy": class_entropy,
           "lesion_entropy": lesion_entropy, "review": review}
    return row, mask.numpy(), resize_map(u["entropy"][0], height, width)


def predict_files(predictor, files: Sequence[Path], out: Path, batch_size: int, overlays: bool,
                  failures: List[Tuple[str, str]]) -> List[Dict]:
    """Run ``predictor`` (``inference.predictors``) on ``files`` in batches; write masks (and overlays, entropy
    panels); return the rows of predictions.csv."""
    (out / "masks").mkdir(exist_ok=True)
    if overlays:
        (out / "overlays").mkdir(exist_ok=True)
        (out / "entropy").mkdir(exist_ok=True)
    stems, rows = UniqueStems(), []
    for start in range(0, len(files), batch_size):
        paths, grays, tensors = read_batch(files[start:start + batch_size], predictor.size, predictor.in_channels,
                                           failures)
        if not paths:
            continue
        seg_probs, cls_probs = predictor(torch.stack(tensors))
        for i, (path, gray) in enumerate(zip(paths, grays)):
            stem = stems(path)
            row, mask, entropy = image_row(path, stem, seg_probs[i], cls_probs[i], *gray.shape[:2],
                                           predictor.review_thresholds)
            write_png(out / "masks" / f"{stem}.png", mask * 255)
            if overlays:
                caption = (f"{path.name} | pred {CLASS_NAMES[row['pred_class']]} p(mal)={row['prob_malignant']:.2f}"
                           f" | lesion {row['lesion_area_px']} px")
                write_png(out / "overlays" / f"{stem}.png", overlay_panel(gray, mask, None, caption))
                write_png(out / "entropy" / f"{stem}.png", entropy_panel(
                    gray, entropy.numpy(), f"{path.name} | class entropy {row['class_entropy']:.2f} | lesion "
                                           f"entropy {row['lesion_entropy']:.2f}"))
            rows.append(row)
    return rows


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Predict lesion masks and classes for unlabeled images.")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help="RUN/checkpoints/best.pt or latest.pt")
    source.add_argument("--model", help="a model exported by Code/export.py (.onnx: ONNX Runtime; else TorchScript)")
    parser.add_argument("--images", nargs="+", required=True, help="image files and/or folders of images")
    parser.add_argument("--out", help="output folder (default: <run folder>/predictions)")
    parser.add_argument("--force", action="store_true", help=FORCE_HELP)
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--no-amp", action="store_true", help="full precision on CUDA")
    parser.add_argument("--no-overlays", action="store_true", help="write masks and the CSV only")
    parser.add_argument("--calibration", nargs="?", const="auto", metavar="FILE",
                        help="apply the temperature and review thresholds of evaluate.py --calibrate "
                             "(default: <checkpoint stem>.calibration.json)")
    args = parser.parse_args(argv)
    if args.batch_size <= 0:
        raise UserError("--batch-size must be positive")
    if args.model and args.calibration:
        raise UserError("--calibration applies to --checkpoint; an exported model carries its own temperature "
                        "(export.py --temperature)")
    return args


def open_predictor(args: argparse.Namespace):
    """The predictor of ``--checkpoint`` (with ``--calibration``) or of ``--model``; checks files first."""
    from Code.inference.calibration import calibration_path, resolve_temperature
    from Code.inference.predictors import CheckpointPredictor, open_exported

    if args.model:
        if args.device == "cuda":
            raise UserError("--model runs on the CPU (drop --device cuda)")
        return open_exported(args.model)
    checkpoint = Path(args.checkpoint)
    if not checkpoint.is_file():
        raise UserError(f"checkpoint not found: {checkpoint}")
    device = resolve_device(args.device)
    calibration = resolve_temperature(args.calibration, checkpoint)
    if calibration is None and calibration_path(checkpoint).is_file():
        print(f"note: {calibration_path(checkpoint)} exists; add --calibration to apply its temperature and "
              f"review thresholds")
    model, config, _ = load_model_from_checkpoint(checkpoint, device)
    return CheckpointPredictor(model, config, device, amp=device.type == "cuda" and not args.no_amp,
                               calibration=calibration)


def predict_inputs(args: argparse.Namespace) -> List[Tuple[str, str]]:
    """The ``--images`` items and the calibration file, as ``(path, name)`` inputs of the output rule."""
    inputs = [(item, f"--images {item}") for item in args.images]
    if args.calibration not in (None, "auto"):
        inputs.append((args.calibration, f"--calibration {args.calibration}"))
    return inputs


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    source = Path(args.model or args.checkpoint)
    if not source.is_file():
        raise UserError(f"{'model file' if args.model else 'checkpoint'} not found: {source}")
    files, failures = collect_images(args.images)
    for _, reason in failures:
        print(f"error: {reason}", file=sys.stderr)
    if not files:
        raise UserError(f"no image files ({', '.join(sorted(IMAGE_EXTS))}) in {' '.join(args.images)}")
    default_out = source.resolve().parent / "predictions" if args.model else run_folder_of(source) / "predictions"
    predictor = open_predictor(args)  # before the output folder: a bad model or calibration leaves nothing behind
    inputs = [(source, f"--{'model' if args.model else 'checkpoint'} {source}"), *predict_inputs(args)]
    out = prepare_out(Path(args.out) if args.out else default_out, "predict.py", args.force, inputs)
    rows = predict_files(predictor, files, out, args.batch_size, overlays=not args.no_overlays, failures=failures)
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
