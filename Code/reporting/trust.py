"""Calibration and uncertainty reports for ``evaluate.py``: the ``val/`` part to fit on, entropy panels, report.

- :func:`validation_part_to_fit`: the ``val/`` part for ``--calibrate``, checked before anything is written (never
  the evaluated part nor a split's test part: ``reporting/val_part.py``);
- :class:`EntropyPanelCollector`: the ``on_batch`` uncertainty collector of ``Code/inference/calibration_fit.py``
  (whose :func:`~Code.inference.calibration_fit.fit_calibration` fits the calibration document), also writing
  ``entropy/<image>.png``.
- :func:`trust_report`: ECE / Brier (before and after temperature scaling), ``reliability.png``, the review
  flag per image, ``review.md`` (Dice and accuracy of flagged vs unflagged images), ``risk_coverage.png`` and
  ``risk_coverage.csv``; returns the entries added to ``metrics.json``.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
import torch

from Code.data import denormalize
from Code.errors import UserError
from Code.outputs import prepare_output_file
from Code.inference.calibration import N_BINS, calibration_metrics, calibration_path, reliability_curve, rescale_probs
from Code.inference.calibration_fit import UncertaintyCollector
from Code.inference.uncertainty import flag_table, review_flags, risk_coverage, score_at_coverage
from Code.reporting.figures import safe_stem, write_png
from Code.reporting.uncertainty_figures import entropy_panel, markdown_table, plot_reliability, plot_risk_coverage
from Code.reporting.val_part import refuse_scored_images

COVERAGES = (1.0, 0.9, 0.8, 0.7, 0.5)
TRUST_COLUMNS = ("class_entropy", "lesion_entropy", "review")  # per-image CSV columns added by trust_report


class EntropyPanelCollector(UncertaintyCollector):
    """:class:`Code.inference.calibration_fit.UncertaintyCollector` that also writes ``folder/<stem>.png`` entropy
    panels when ``folder`` is set."""

    def __init__(self, folder: Optional[Path] = None):
        super().__init__()
        self.folder = folder
        if folder is not None:
            folder.mkdir(parents=True, exist_ok=True)

    def after_batch(self, batch: Dict[str, Any], uncertainty: Dict[str, torch.Tensor]) -> None:
        if self.folder is None:
            return
        grays = (denormalize(batch["images"])[:, 0] * 255.0).round().to(torch.uint8).numpy()
        for i, name in enumerate(batch["names"]):
            caption = (f"class entropy {self.values[name]['class_entropy']:.2f} | lesion entropy "
                       f"{self.values[name]['lesion_entropy']:.2f}")
            write_png(self.folder / f"{safe_stem(name)}.png",
                      entropy_panel(grays[i], uncertainty["entropy"][i].numpy(), caption))


def validation_part_to_fit(calibrate: bool, val: Optional[str], force: bool, checkpoint: Path, part: Path
                           ) -> Optional[Path]:
    """``--calibrate``: the validation part to fit on (``--val``, else the ``val/`` beside the evaluated
    ``part``), checked before anything is written — it may not be ``part`` nor a split's test part
    (``reporting/val_part.py``); None without ``--calibrate``."""
    if not calibrate:
        return None
    folder = Path(val) if val else part.parent / "val"
    if not (folder / "labeled.txt").is_file():
        raise UserError(f"--calibrate needs a validation part: no {folder / 'labeled.txt'} (split with "
                        f"data_split.py --val-ratio, or name one with --val)")
    if not (folder / "labeled.txt").read_text().strip():
        raise UserError(f"{folder / 'labeled.txt'} lists no images: nothing to fit the calibration on")
    refuse_scored_images(folder, part, "--val" if val else "--calibrate: the validation part")
    prepare_output_file(calibration_path(checkpoint), "evaluate.py", force, [(checkpoint, "--checkpoint")],
                        kind=is_calibration, kind_name="a calibration file", flag="calibration file",
                        alternative="apply it with --calibration")
    return folder


def is_calibration(path: Path) -> bool:
    """A calibration document of ``evaluate.py --calibrate`` (JSON with a ``temperature``)."""
    try:
        return "temperature" in json.loads(Path(path).read_text())
    except (OSError, ValueError, TypeError):
        return False


def _write_curve_csv(path: Path, curves: Dict[str, Dict[str, np.ndarray]]) -> None:
    names = list(curves)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["coverage", *names])
        first = curves[names[0]]
        for i, coverage in enumerate(first["coverage"]):
            writer.writerow([repr(float(coverage)), *(repr(float(curves[n]["score"][i])) for n in names)])


def trust_report(records: List[Dict[str, Any]], collector: UncertaintyCollector,
                 calibration: Optional[Dict[str, Any]], out: Path) -> Dict[str, Any]:
    """Add ``class_entropy``, ``lesion_entropy`` and ``review`` to each record; write the calibration and
    uncertainty figures and tables into ``out``; return the entries for ``metrics.json``."""
    for r in records:
        r["class_entropy"] = collector.values[r["name"]]["class_entropy"]
        r["lesion_entropy"] = collector.values[r["name"]]["lesion_entropy"]
    labels = [r["label"] for r in records]
    probs = [r["prob_malignant"] for r in records]
    summary: Dict[str, Any] = dict(calibration_metrics(probs, labels))
    curves = {"model" if calibration is None else f"T = {calibration['temperature']:.3f}":
              (reliability_curve(probs, labels), dict(summary))}
    if calibration is not None:
        raw = rescale_probs(torch.stack([collector.values[r["name"]]["probs"] for r in records]),
                            1.0 / calibration["temperature"])[:, 1].tolist()
        before = calibration_metrics(raw, labels)
        summary.update(temperature=calibration["temperature"], ece_uncalibrated=before["ece"],
                       brier_uncalibrated=before["brier"])
        curves = {"uncalibrated": (reliability_curve(raw, labels), before), **curves}
    plot_reliability({k: v[0] for k, v in curves.items()}, {k: v[1] for k, v in curves.items()},
                     out / "reliability.png")

    accuracy_curve = risk_coverage([float(r["label"] == r["pred_class"]) for r in records],
                                   [r["class_entropy"] for r in records])
    dice_curve = risk_coverage([r["dice"] for r in records], [r["lesion_entropy"] for r in records])
    rc = {"accuracy (by class entropy)": accuracy_curve, "Dice (by lesion entropy)": dice_curve}
    plot_risk_coverage({k: (v["coverage"], v["score"]) for k, v in rc.items()}, out / "risk_coverage.png")
    _write_curve_csv(out / "risk_coverage.csv", rc)
    summary["risk_coverage"] = {f"{c:.1f}": {"accuracy": score_at_coverage(accuracy_curve, c),
                                             "dice": score_at_coverage(dice_curve, c)} for c in COVERAGES}

    thresholds = None if calibration is None else calibration.get("review_thresholds")
    flags = review_flags([r["class_entropy"] for r in records], [r["lesion_entropy"] for r in records],
                         thresholds) if thresholds else [None] * len(records)
    for r, flag in zip(records, flags):
        r["review"] = "" if flag is None else int(flag)
    if thresholds:
        table = flag_table([dict(r, review=bool(r["review"])) for r in records])
        (out / "review.md").write_text(
            f"Review flag: class entropy > {thresholds['class_entropy']:.6g} or lesion entropy > "
            f"{thresholds['lesion_entropy']:.6g} (thresholds chosen on val). Dice and accuracy in %.\n\n"
            + markdown_table(table, ("group", "n", "dice", "accuracy")))
        summary["review"] = {"thresholds": thresholds, "groups": table}
    return summary


def format_trust(summary: Dict[str, Any]) -> List[str]:
    """Lines for the printed summary."""
    lines = [f"calibration: ECE {100 * summary['ece']:.2f} % ({N_BINS} bins), Brier {summary['brier']:.4f}"]
    if "temperature" in summary:
        lines[0] += (f" with T = {summary['temperature']:.3f}; uncalibrated ECE "
                     f"{100 * summary['ece_uncalibrated']:.2f} %, Brier {summary['brier_uncalibrated']:.4f}")
    rc = summary["risk_coverage"]
    lines.append("risk-coverage: accuracy " + ", ".join(f"{100 * v['accuracy']:.1f} % at {c}"
                                                       for c, v in rc.items()))
    if "review" in summary:
        lines.append("review flag: " + "; ".join(
            f"{g['group']} n={g['n']} Dice {_pct(g['dice'])} accuracy {_pct(g['accuracy'])}"
            for g in summary["review"]["groups"]))
    else:
        lines.append("review flag: no thresholds (fit them on val with --calibrate, or pass --calibration)")
    return lines


def _pct(value: float) -> str:
    return "n/a" if value != value else f"{100 * value:.2f} %"


def labeled_loader(part: Path, config: Dict[str, Any], batch_size: int, num_workers: int, device: torch.device):
    """Eval-mode DataLoader over a labeled split part (the checkpoint's input size and channels)."""
    from torch.utils.data import DataLoader
    from Code.data import SplitDataset

    dataset = SplitDataset(part, "eval", size=config["data"]["size"], in_channels=config["data"]["in_channels"])
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                      pin_memory=device.type == "cuda")
