"""Paired intervals and McNemar p-values for report.py's paired-gain table, from the runs' per-image predictions.

Each finished run's ``final_metrics.json`` names its per-image test predictions
(``"predictions": {"final": "test_predictions_final.csv", "best": "test_predictions_best.csv" or null}``), CSVs
with the columns ``image,label,prob_malignant,pred_class,dice,iou``, one row per test image. A row of the gain
table at the val-chosen step uses the ``best`` CSVs, one at the final step the ``final`` CSVs. A method run and
its baseline run of the same seed are paired image by image (by ``image``); the seeds of one row are pooled
(:mod:`Code.reporting.paired_stats`). Runs without the CSVs (older runs) get "no per-image predictions", never an
error; test image sets that differ between the two runs of a pair, or between the seeds of a row, are an error.
"""
from __future__ import annotations

import csv
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from Code.errors import UserError
from Code.reporting.pairs import paired_runs
from Code.reporting.paired_stats import CI_METRICS, Interval, PairedSet, mcnemar, paired_intervals

PRED_COLUMNS = ("image", "label", "prob_malignant", "pred_class", "dice", "iou")
CSV_OF = {"val": "best", "final": "final"}  # gain-table row (test at) → key of final_metrics.json "predictions"
NO_PREDICTIONS = "no per-image predictions"

Key = Tuple[str, str, str, Any, str]  # (method, task, dataset, labels, at), as in pairs.paired_gains


@dataclass
class Comparison:
    """One gain-table row: its baseline row(s), seeds, and either intervals + McNemar or the reason for none."""
    baselines: List[str]
    seeds: List[Any]
    intervals: Dict[str, Interval] = field(default_factory=dict)
    mcnemar: List[Tuple[Any, int, int, float]] = field(default_factory=list)  # (seed, b, c, p)
    n_images: int = 0
    reason: str = ""


def predictions_file(run: Path, which: str) -> Optional[Path]:
    """The per-image CSV (``which`` = "best" / "final") that ``run/final_metrics.json`` names; None when the run
    names none (an older run) or the named file is absent (a note on stderr then)."""
    record = run / "final_metrics.json"
    if not record.is_file():
        return None
    try:
        doc = json.loads(record.read_text())
    except json.JSONDecodeError as exc:
        raise UserError(f"{record}: not valid JSON ({exc})") from None
    names = doc.get("predictions") if isinstance(doc, dict) else None
    name = names.get(which) if isinstance(names, dict) else None
    if not name:
        return None
    path = run / name
    if not path.is_file():
        print(f"note: {record} names {name}, which is missing: {NO_PREDICTIONS} for this run", file=sys.stderr)
        return None
    return path


def read_predictions(path: Path) -> Dict[str, Tuple[int, float, int, float]]:
    """``{image: (label, prob_malignant, pred_class, dice)}`` of a per-image CSV; bad content is a UserError."""
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in PRED_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise UserError(f"{path}: missing columns {', '.join(missing)} (expected {','.join(PRED_COLUMNS)})")
        rows: Dict[str, Tuple[int, float, int, float]] = {}
        for line, row in enumerate(reader, start=2):
            try:
                value = (int(row["label"]), float(row["prob_malignant"]), int(row["pred_class"]), float(row["dice"]))
            except (TypeError, ValueError) as exc:
                raise UserError(f"{path}, line {line}: unreadable value ({exc})") from None
            if row["image"] in rows:
                raise UserError(f"{path}, line {line}: image {row['image']!r} appears twice")
            rows[row["image"]] = value
    if not rows:
        raise UserError(f"{path}: no images")
    return rows


def _differ(a: Path, b: Path, left: Dict[str, Any], right: Dict[str, Any], what: str) -> UserError:
    only = sorted(set(left) ^ set(right))
    return UserError(f"{a} and {b} {what} ({len(only)} image(s) in only one, e.g. {only[0]!r}); "
                     "they cannot be paired image by image")


def paired_set(files: List[Tuple[Path, Path]]) -> PairedSet:
    """Stack the (method CSV, baseline CSV) pair of every seed on their common test images (sorted by name). The
    two CSVs of a seed, and all seeds, must hold the same images with the same true classes."""
    tables = [(read_predictions(m), read_predictions(b)) for m, b in files]
    first_m, _ = tables[0]
    images = sorted(first_m)
    for (m_path, b_path), (m, b) in zip(files, tables):
        if set(m) != set(b):
            raise _differ(m_path, b_path, m, b, "score different test images")
        if set(m) != set(first_m):
            raise _differ(files[0][0], m_path, first_m, m, "(two seeds of one row) score different test images")
        wrong = [i for i in images if m[i][0] != b[i][0] or m[i][0] != first_m[i][0]]
        if wrong:
            raise UserError(f"{m_path} and {b_path}: image {wrong[0]!r} has different true classes "
                            f"({len(wrong)} image(s)); they cannot be paired")

    def stack(side: int, col: int, dtype: Any) -> np.ndarray:
        return np.array([[t[side][i][col] for i in images] for t in tables], dtype=dtype)

    return PairedSet(label=np.array([first_m[i][0] for i in images]),
                     dice_m=stack(0, 3, float), dice_b=stack(1, 3, float),
                     prob_m=stack(0, 1, float), prob_b=stack(1, 1, float),
                     pred_m=stack(0, 2, int), pred_b=stack(1, 2, int))


def compare(results: List[Dict[str, Any]], baseline: Optional[str], n_resamples: int, seed: int
            ) -> Dict[Key, Comparison]:
    """A :class:`Comparison` for every row of the paired-gain table (same pairs and keys as ``paired_gains``)."""
    groups: Dict[Key, List[Tuple[Dict[str, Any], Dict[str, Any]]]] = {}
    for r, ref in paired_runs(results, baseline):
        for at, key in (("val", "best_metrics"), ("final", "final_metrics")):
            if r[key] is not None and ref[key] is not None:
                groups.setdefault((r["method"], r["task"], r["dataset"], r["labels"], at), []).append((r, ref))
    out: Dict[Key, Comparison] = {}
    for key, pairs in groups.items():
        pairs.sort(key=lambda p: str(p[0]["seed"]))
        comp = Comparison(baselines=sorted({ref["method"] for _, ref in pairs}), seeds=[r["seed"] for r, _ in pairs])
        files = [(predictions_file(r["run"], CSV_OF[key[4]]), predictions_file(ref["run"], CSV_OF[key[4]]))
                 for r, ref in pairs]
        if any(m is None or b is None for m, b in files):
            comp.reason = NO_PREDICTIONS
        else:
            data = paired_set(files)  # type: ignore[arg-type]
            comp.intervals = paired_intervals(data, n_resamples, seed)
            comp.mcnemar = [(s, *mcnemar(data.label, data.pred_m[k], data.pred_b[k]))
                            for k, s in enumerate(comp.seeds)]
            comp.n_images = data.n_images
        out[key] = comp
    return out


def mcnemar_cell(comp: Comparison, prefix: str = "s") -> str:
    """``s0 0.012 (9/2); s1 …`` — per seed (``d0 …`` per draw) the exact p and the discordant counts b/c."""
    return "; ".join(f"{prefix}{s} {p:.3g} ({b}/{c})" for s, b, c, p in comp.mcnemar)


def extra_columns(comparisons: Dict[Key, Comparison], unit: str = "seeds"
                  ) -> Tuple[List[str], Dict[Key, List[str]]]:
    """Headers and, per gain-table row, the cells: Δ [95 % CI] with its words per metric, then McNemar; a row
    without per-image predictions says so in its first cell ("–" in the others). ``unit`` "draws" labels the
    McNemar p-values by draw (draw s is trained with seed s)."""
    one = "draw" if unit == "draws" else "seed"
    headers = [*(f"{m} Δ [95 % CI]" for m in CI_METRICS), f"McNemar p per {one} (b/c)"]
    cells = {key: [c.reason, *(["–"] * len(CI_METRICS))] if c.reason else
             [*(c.intervals[m].cell() for m in CI_METRICS), mcnemar_cell(c, one[0])] for key, c in comparisons.items()}
    return headers, cells


def caption_note(n_resamples: int, seed: int) -> str:
    """The sentences under the gain table's caption that say how the added columns were made."""
    return (f"Δ [95 % CI]: paired bootstrap over test images (per-image predictions; images resampled within each "
            f"true class, the same images for every seed and both rows; Δ = mean over seeds of row − baseline; "
            f"percentile interval, {n_resamples} resamples, seed {seed}); **bold** and \"ahead\"/\"behind\" only "
            f"where the interval excludes 0, else \"within noise\". McNemar: exact two-sided p of accuracy per seed, "
            f"b = images only the row classifies right, c = only the baseline.")


def write_intervals_csv(comparisons: Dict[Key, Comparison], path: Path, n_resamples: int, seed: int) -> None:
    """Long format: one line per (row, test at, metric) with Δ, low, high (percentage points) and the words; the
    McNemar p-values on the ``accuracy`` line (``s0:p;s1:p``)."""
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["method", "baseline", "task", "dataset", "labels", "test_at", "metric", "seeds", "n_images",
                         "delta", "ci_low", "ci_high", "words", "mcnemar_p", "n_resamples", "bootstrap_seed"])
        for (method, task, dataset, labels, at), c in sorted(comparisons.items(), key=lambda kv: str(kv[0])):
            for metric in CI_METRICS:
                iv = c.intervals.get(metric)
                nums = [f"{100 * v:.4f}" for v in (iv.delta, iv.low, iv.high)] if iv else ["", "", ""]
                p = ";".join(f"s{s}:{p:.6g}" for s, _, _, p in c.mcnemar) if metric == "accuracy" else ""
                writer.writerow([method, "/".join(c.baselines), task, dataset, labels, at, metric,
                                 " ".join(str(s) for s in c.seeds), c.n_images or "", *nums,
                                 iv.words if iv else c.reason, p, n_resamples, seed])
