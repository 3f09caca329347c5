"""Evaluate a checkpoint on a labeled split part: metrics, per-image table, overlays, confusion matrix, ROC.

Usage::

    python Code/evaluate.py --checkpoint RUN/checkpoints/best.pt --data SPLIT/test [--out DIR] [--force]
        [--device auto|cpu|cuda] [--batch-size B] [--num-workers W] [--no-amp] [--no-overlays]
        [--calibrate [--val SPLIT/val] [--review-quantile 0.9] | --calibration [FILE]]

Writes to DIR (default ``<run folder of the checkpoint>/eval_<part name>``; an earlier output of evaluate.py is
replaced as a whole only with ``--force``, README "Outputs and --force"): ``metrics.json`` (the metrics of
``summarize_metrics`` in [0, 1], NaN written as null, plus ``n_images``, ``checkpoint``, ``step``, ``data``,
``device``), ``per_image.csv``, ``overlays/<image>.png`` (image beside the overlay: ground truth red, prediction
green, overlap yellow), ``confusion_matrix.png`` and ``roc.png``,
and for calibration and uncertainty (``Code/reporting/trust.py``): ``entropy/<image>.png`` (image beside its
per-pixel predictive entropy), ``reliability.png`` (ECE and Brier of P(malignant) in ``metrics.json``),
``risk_coverage.png`` / ``.csv`` and, with review thresholds, ``review.md`` (flagged vs unflagged images).
``--calibrate`` fits the temperature and the review thresholds on the split's ``val/`` part (the sibling of
``--data``, or ``--val``), stores them in ``<checkpoint stem>.calibration.json`` next to the checkpoint (an
existing one is replaced only with ``--force``) and applies them; ``--calibration`` applies a stored one
(that file, or FILE), which must have been fitted on this very checkpoint file (its SHA-256 is stored). ``--val``
may not be the evaluated ``--data`` nor a split's ``test/`` part (``reporting/trust.py``).
Metrics are computed at the model's input resolution (``data.size`` of the checkpoint's config). Works with
checkpoints of ``seg_train.py`` and ``cls_train.py``, saved with or without DDP; AMP on CUDA unless ``--no-amp``.
The figures are drawn by ``Code/reporting/figures.py`` (shared with ``predict.py``).
"""
from __future__ import annotations

import _bootstrap  # noqa: F401

import argparse
import csv
import json
import math
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import torch

from Code.data import CLASS_NAMES, denormalize
from Code.errors import UserError, run_cli
from Code.inference.loading import load_model_from_checkpoint
from Code.outputs import FORCE_HELP, prepare_output_folder
from Code.reporting.figures import overlay_panel, plot_confusion_and_roc, safe_stem, write_png

PER_IMAGE_COLUMNS = ("name", "label", "pred_class", "prob_malignant", "dice", "iou", "tp", "fp", "fn", "tn",
                     "class_entropy", "lesion_entropy", "review")


# ------------------------------------------------------------------------------------------ shared CLI helpers
def resolve_device(name: str) -> torch.device:
    """``auto`` → CUDA when available, else CPU; ``cuda`` without CUDA is a UserError."""
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for but CUDA is not available (use --device cpu or auto)")
    return torch.device("cuda" if name in ("auto", "cuda") and torch.cuda.is_available() else "cpu")


def run_folder_of(checkpoint: Path) -> Path:
    """``RUN`` for ``RUN/checkpoints/x.pt``, else the checkpoint's own folder."""
    parent = checkpoint.resolve().parent
    return parent.parent if parent.name == "checkpoints" else parent


def prepare_out(out: Path, script: str, force: bool, inputs) -> Path:
    """Create ``out`` by the one output rule (Code/outputs.py): new or empty, or ``script``'s own earlier output
    replaced as a whole with ``force``; never a folder holding or inside one of ``inputs`` ``[(path, name)]``."""
    return prepare_output_folder(out, script, force, inputs)


def training_images_warning(part: Path) -> Optional[str]:
    """A warning when the images listed in ``part/labeled.txt`` belong to a train part of their split (found as
    ``split.json`` in ``part`` or up to three folders above; without one, a path through ``train/``)."""
    from Code.data import read_labeled_list

    part = part.resolve()
    names = [entry[0] for entry in read_labeled_list(part / "labeled.txt")]
    for folder in [part, *list(part.parents)[:3]]:
        record_path = folder / "split.json"
        if record_path.is_file():
            try:
                files = json.loads(record_path.read_text()).get("files", {})
            except (ValueError, AttributeError):
                break
            train = sum(1 for name in names if files.get(name, {}).get("part") == "train")
            if train:
                return (f"{train} of the {len(names)} images in {part} belong to the train part of the split "
                        f"({record_path}): these are training images, so the metrics are not a held-out score")
            return None
    if "train" in part.parts[-3:]:
        return f"{part} looks like a train part of a split: the metrics are not a held-out score"
    return None


# ------------------------------------------------------------------------------------------ evaluation outputs
class OverlayWriter:
    """``on_batch`` callback of ``evaluate_model`` that writes one overlay PNG per image."""

    def __init__(self, folder: Path):
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)

    def __call__(self, batch: Dict[str, Any]) -> None:
        grays = (denormalize(batch["images"])[:, 0] * 255.0).round().to(torch.uint8).numpy()
        for i, name in enumerate(batch["names"]):
            truth, pred = batch["masks"][i].numpy(), batch["pred_masks"][i].numpy()
            inter, total = int((truth & pred).sum()), int(truth.sum() + pred.sum())
            dice = 1.0 if total == 0 else 2.0 * inter / total
            caption = (f"truth {CLASS_NAMES[int(batch['labels'][i])]} | pred "
                       f"{CLASS_NAMES[int(batch['pred_class'][i])]} p(mal)={float(batch['prob_malignant'][i]):.2f}"
                       f" | Dice {dice:.3f}")
            write_png(self.folder / f"{safe_stem(name)}.png", overlay_panel(grays[i], pred, truth, caption))


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return None if isinstance(value, float) and math.isnan(value) else value


def _chain(*callbacks):
    """One ``on_batch`` callback calling each of ``callbacks`` that is not None."""
    active = [c for c in callbacks if c is not None]
    return lambda batch: [c(batch) for c in active]


def write_per_image(records: List[Dict[str, Any]], path: Path) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(PER_IMAGE_COLUMNS)
        for r in records:
            writer.writerow([repr(r[k]) if isinstance(r[k], float) else r[k] for k in PER_IMAGE_COLUMNS])


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Evaluate a Hermes checkpoint on a labeled split part.")
    parser.add_argument("--checkpoint", required=True, help="RUN/checkpoints/best.pt or latest.pt")
    parser.add_argument("--data", required=True, help="split part with labeled.txt, image/, mask/ (e.g. SPLIT/test)")
    parser.add_argument("--out", help="output folder (default: <run folder>/eval_<part name>)")
    parser.add_argument("--force", action="store_true", help=FORCE_HELP + "; refit an existing calibration")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--num-workers", type=int, default=0)
    parser.add_argument("--no-amp", action="store_true", help="full precision on CUDA")
    parser.add_argument("--no-overlays", action="store_true", help="skip the per-image overlay and entropy PNGs")
    calib = parser.add_mutually_exclusive_group()
    calib.add_argument("--calibrate", action="store_true",
                       help="fit the temperature and review thresholds on val/, store them next to the checkpoint")
    calib.add_argument("--calibration", nargs="?", const="auto", metavar="FILE",
                       help="apply a stored calibration (default: <checkpoint stem>.calibration.json)")
    parser.add_argument("--val", help="validation part for --calibrate (default: the val/ beside --data)")
    parser.add_argument("--review-quantile", type=float, default=0.9,
                        help="--calibrate: review thresholds = this quantile of the val uncertainties")
    args = parser.parse_args(argv)
    if args.batch_size <= 0 or args.num_workers < 0:
        raise UserError("--batch-size must be positive and --num-workers not negative")
    if not 0.0 < args.review_quantile < 1.0:
        raise UserError(f"--review-quantile must be between 0 and 1, got {args.review_quantile}")
    if args.val and not args.calibrate:
        raise UserError("--val is only used with --calibrate")
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    device = resolve_device(args.device)
    checkpoint, part = Path(args.checkpoint), Path(args.data)
    if not checkpoint.is_file():
        raise UserError(f"checkpoint not found: {checkpoint}")
    if not (part / "labeled.txt").is_file():
        raise UserError(f"no labeled.txt in {part} (expected a split part such as SPLIT/test)")
    from Code.inference.calibration import calibration_path, resolve_temperature
    from Code.reporting.trust import validation_part_to_fit
    val = validation_part_to_fit(args.calibrate, args.val, args.force, checkpoint, part)
    calibration = resolve_temperature(args.calibration, checkpoint)
    stored = Path(args.calibration) if args.calibration not in (None, "auto") else calibration_path(checkpoint)
    inputs = [(checkpoint, f"--checkpoint {checkpoint}"), (part, f"--data {part}"), (val, f"--val {val}"),
              (stored, f"the calibration file {stored}")]
    out = prepare_out(Path(args.out) if args.out else run_folder_of(checkpoint) / f"eval_{part.resolve().name}",
                      "evaluate.py", args.force, inputs)
    warning = training_images_warning(part)
    if warning:
        print(f"warning: {warning}", file=sys.stderr)
    # the heavy imports (smp, timm) only once the arguments are checked
    from Code.inference.calibration import checkpoint_sha256, save_calibration
    from Code.inference.metrics import summarize_metrics
    from Code.inference.prediction import evaluate_model
    from Code.inference.calibration import apply_temperature
    from Code.inference.calibration_fit import fit_calibration
    from Code.reporting.trust import EntropyPanelCollector, format_trust, labeled_loader, trust_report

    model, config, step = load_model_from_checkpoint(checkpoint, device)
    amp = device.type == "cuda" and not args.no_amp
    if val is not None:
        calibration = fit_calibration(model, labeled_loader(val, config, args.batch_size, args.num_workers, device),
                                      device, amp, args.review_quantile)
        calibration.update(checkpoint=str(checkpoint.resolve()), checkpoint_sha256=checkpoint_sha256(checkpoint),
                           step=step, val=str(val.resolve()))
        save_calibration(calibration_path(checkpoint), calibration)
        print(f"fitted on {calibration['n_val']} val images: T = {calibration['temperature']:.4f}, "
              f"wrote {calibration_path(checkpoint)}")
    loader = labeled_loader(part, config, args.batch_size, args.num_workers, device)
    collector = EntropyPanelCollector(None if args.no_overlays else out / "entropy")
    on_batch = _chain(None if args.no_overlays else OverlayWriter(out / "overlays"), collector)
    records = evaluate_model(apply_temperature(model, calibration), loader, device, amp=amp, on_batch=on_batch)
    if not records:
        raise UserError(f"{part / 'labeled.txt'} lists no images")
    metrics = summarize_metrics(records)
    trust = trust_report(records, collector, calibration, out)
    summary = {**metrics, **trust, "n_images": len(records), "checkpoint": str(checkpoint.resolve()), "step": step,
               "data": str(part.resolve()), "device": device.type, "warning": warning}
    (out / "metrics.json").write_text(json.dumps(_json_safe(summary), indent=2) + "\n")
    write_per_image(records, out / "per_image.csv")
    plot_confusion_and_roc(records, out)
    shown = " | ".join(f"{k} {'n/a' if math.isnan(v) else f'{100 * v:.2f}'}" for k, v in metrics.items())
    print(f"{len(records)} images, step {step}: {shown}")
    for line in format_trust(trust):
        print(line)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    run_cli(main)
