"""The sealed test split: ``test/`` is scored once, after the last training step, and written nowhere but here.

During training the engine evaluates ``val/`` only (unless ``eval.test_curves``). After the last step the trainer
scores ``test/`` twice — with the final weights and with the weights of ``checkpoints/best.pt`` — and this module
writes the outcome:

- ``final_metrics.json``: ``step``, ``selection``, ``test_at_final``, ``val_at_final``, ``best_val_step``,
  ``test_at_best_val`` (with its ``step``), ``val_at_best``, ``test_curves`` (bool) and ``predictions``
  (``{"final": "test_predictions_final.csv", "best": "test_predictions_best.csv" or null}``);
- ``test_predictions_final.csv`` / ``test_predictions_best.csv``: one row per test image, sorted by image, columns
  :data:`PREDICTION_COLUMNS` (``label`` = true class, 0 benign / 1 malignant; floats with 6 decimals);
- ``val_predictions_final.csv`` / ``val_predictions_best.csv``: the same for the val images (a split with ``val/``),
  from which a report chooses an operating threshold on val (Code/inference/operating_point.py).

A finished run (``final_metrics.json`` of its current step present) is not scored again: :func:`finished_result`.
"""
from __future__ import annotations

import csv
import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence

import torch

from Code.errors import UserError

FINAL_METRICS = "final_metrics.json"
PREDICTION_FILES = {"final": "test_predictions_final.csv", "best": "test_predictions_best.csv"}
VAL_PREDICTION_FILES = {"final": "val_predictions_final.csv", "best": "val_predictions_best.csv"}
PREDICTION_COLUMNS = ("image", "label", "prob_malignant", "pred_class", "dice", "iou")


def _atomic_write(path: Path, write) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", newline="") as handle:
        write(handle)
    os.replace(tmp, path)


def write_predictions(path: Path, records: Sequence[Dict[str, Any]]) -> None:
    """One CSV row per record of :func:`Code.inference.prediction.evaluate_model`, sorted by image name."""
    def write(handle):
        writer = csv.writer(handle)
        writer.writerow(PREDICTION_COLUMNS)
        for r in sorted(records, key=lambda r: r["name"]):
            writer.writerow([r["name"], int(r["label"]), f"{r['prob_malignant']:.6f}", int(r["pred_class"]),
                             f"{r['dice']:.6f}", f"{r['iou']:.6f}"])
    _atomic_write(Path(path), write)


def read_predictions(path: Path) -> List[Dict[str, Any]]:
    """The rows of a ``test_predictions_*.csv`` (label and pred_class as int, the rest of the numbers as float)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"per-image predictions not found: {path}")
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        if tuple(reader.fieldnames or ()) != PREDICTION_COLUMNS:
            raise UserError(f"{path}: columns must be {','.join(PREDICTION_COLUMNS)}")
        try:
            return [{"image": r["image"], "label": int(r["label"]), "prob_malignant": float(r["prob_malignant"]),
                     "pred_class": int(r["pred_class"]), "dice": float(r["dice"]), "iou": float(r["iou"])}
                    for r in reader]
        except (TypeError, ValueError) as exc:
            raise UserError(f"{path}: unreadable value ({exc})") from None


def finished_result(run_dir: Path, step: int) -> Optional[Dict[str, Any]]:
    """The saved ``final_metrics.json`` of ``run_dir`` when it belongs to ``step`` (the run is done: test is not
    scored again); None when it is missing, unreadable or of another step (e.g. before an ``--iters`` extension)."""
    path = Path(run_dir) / FINAL_METRICS
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return saved if isinstance(saved, dict) and saved.get("step") == step else None


def load_best_weights(path: Path, step: int) -> Dict[str, torch.Tensor]:
    """The model weights of ``best.pt``, checked to be those of the val-chosen ``step`` the trainer remembers."""
    from Code.common.checkpoint import load_checkpoint

    state = load_checkpoint(path)
    if state.get("step") != step:
        raise UserError(f"{path} holds step {state.get('step')}, but the run chose step {step} on val; "
                        "the file was replaced: re-run with --force to train afresh")
    return state["model"]


@contextmanager
def swapped_weights(model: torch.nn.Module, weights: Dict[str, torch.Tensor]) -> Iterator[torch.nn.Module]:
    """Load ``weights`` into ``model`` for the ``with`` block, then put its own weights (and buffers) back."""
    own = {k: v.detach().clone() for k, v in model.state_dict().items()}
    model.load_state_dict(weights)
    try:
        yield model
    finally:
        model.load_state_dict(own)


def write_outputs(run_dir: Path, result: Dict[str, Any], final_records: Sequence[Dict[str, Any]],
                  best_records: Optional[Sequence[Dict[str, Any]]],
                  val_final_records: Optional[Sequence[Dict[str, Any]]] = None,
                  val_best_records: Optional[Sequence[Dict[str, Any]]] = None) -> None:
    """The per-image CSVs (test, and val where given), then ``final_metrics.json`` (last: its presence marks the
    run as finished)."""
    run_dir = Path(run_dir)
    write_predictions(run_dir / PREDICTION_FILES["final"], final_records)
    if best_records is not None:
        write_predictions(run_dir / PREDICTION_FILES["best"], best_records)
    for which, records in (("final", val_final_records), ("best", val_best_records)):
        if records is not None:
            write_predictions(run_dir / VAL_PREDICTION_FILES[which], records)
    _atomic_write(run_dir / FINAL_METRICS, lambda handle: handle.write(json.dumps(result, indent=2)))


def build_result(step: int, has_val: bool, test_curves: bool, final: Dict[str, float],
                 val_at_final: Optional[Dict[str, float]], best: Optional[Dict[str, Any]],
                 test_at_best: Optional[Dict[str, float]]) -> Dict[str, Any]:
    """The content of ``final_metrics.json``; ``best`` is the trainer's record ``{"step", "val", ...}`` or None."""
    return {"step": step, "selection": "val" if has_val else "none (no val/ part)",
            "test_at_final": dict(final, step=step), "val_at_final": val_at_final,
            "best_val_step": None if best is None else best["step"],
            "test_at_best_val": None if best is None else dict(test_at_best, step=best["step"]),
            "val_at_best": None if best is None else best["val"],
            "test_curves": bool(test_curves),
            "predictions": {"final": PREDICTION_FILES["final"],
                            "best": None if best is None else PREDICTION_FILES["best"]}}
