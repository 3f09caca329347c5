"""Sensitivity at a specificity chosen on val, for report.py (classification judged beyond accuracy).

Per run: the threshold t on p(malignant) of :func:`Code.inference.operating_point.threshold_for_specificity`,
chosen on the run's **val** images at its val-chosen weights (``val_predictions_best.csv``) for the target
specificity s*, then the **test** sensitivity and specificity of the rule p > t (``test_predictions_best.csv``).
Runs without the val CSV (made before the trainer wrote it; ``python -m Code.engine.val_predictions RUN`` adds it)
are left out and counted. Per row: mean ± sample std over its runs. Per pair with the reference row (report.py's
pairing, :func:`Code.reporting.pairs.paired_runs`): Δ sensitivity and Δ specificity, each run thresholded at its
own t, with the paired bootstrap interval over test images of :mod:`Code.reporting.paired_stats`.
"""
from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from Code.inference.operating_point import rates_at, threshold_for_specificity
from Code.reporting.intervals import paired_set, read_predictions
from Code.reporting.paired_stats import paired_interval
from Code.reporting.pairs import paired_runs
from Code.reporting.runs import method_key

VAL_CSV, TEST_CSV = "val_predictions_best.csv", "test_predictions_best.csv"
DEFAULT_TARGET = 0.90


def run_point(run: Path, target: float) -> Optional[Dict[str, float]]:
    """``{"threshold", "sensitivity", "specificity"}`` (test, at the val-chosen t) of one run; None without both
    CSVs."""
    val_path, test_path = Path(run) / VAL_CSV, Path(run) / TEST_CSV
    if not (val_path.is_file() and test_path.is_file()):
        return None
    val, test = read_predictions(val_path), read_predictions(test_path)
    t = threshold_for_specificity([v[1] for v in val.values()], [v[0] for v in val.values()], target)
    return {"threshold": t, **rates_at([v[1] for v in test.values()], [v[0] for v in test.values()], t)}


def _mean_std(values: List[float]) -> str:
    vals = [100 * v for v in values if not math.isnan(v)]
    if not vals:
        return "n/a"
    return f"{np.mean(vals):.2f}" + (f" ± {np.std(vals, ddof=1):.2f}" if len(vals) > 1 else " (n = 1)")


def _paired_cells(pairs: List[Tuple[Dict[str, Any], Dict[str, Any]]],
                  points: Dict[Path, Optional[Dict[str, float]]],
                  n_resamples: int, seed: int) -> List[str]:
    """Δ sensitivity and Δ specificity [95 % CI] of the pairs (each run thresholded at its own val-chosen t)."""
    data = paired_set([(Path(r["run"]) / TEST_CSV, Path(ref["run"]) / TEST_CSV) for r, ref in pairs])
    t_m = np.array([points[Path(r["run"])]["threshold"] for r, _ in pairs])[:, None]
    t_b = np.array([points[Path(ref["run"])]["threshold"] for _, ref in pairs])[:, None]
    data.pred_m, data.pred_b = (data.prob_m > t_m).astype(int), (data.prob_b > t_b).astype(int)
    return [paired_interval(data, m, n_resamples, seed).cell() for m in ("sensitivity", "specificity")]


def section(results: List[Dict[str, Any]], baseline: Optional[str], target: float, n_resamples: int, seed: int,
            unit: str = "seeds") -> Optional[str]:
    """The Markdown section (None when no run has the val CSV): per-row table, then the paired table."""
    points = {Path(r["run"]): run_point(Path(r["run"]), target) for r in results}
    with_point = [r for r in results if points[Path(r["run"])] is not None]
    if not with_point:
        return None
    rows: Dict[Tuple[str, str, str, Any], List[Dict[str, float]]] = defaultdict(list)
    for r in with_point:
        rows[(r["method"], r["task"], r["dataset"], r["labels"])].append(points[Path(r["run"])])
    left_out = len(results) - len(with_point)
    lines = [f"**Sensitivity at a specificity chosen on val** (target {100 * target:g} %) — per run the threshold t "
             f"on p(malignant) whose **val** specificity first reaches the target (val-chosen weights), then **test** "
             f"sensitivity and specificity at t, percent; mean ± sample std over {unit}."
             + (f" {left_out} run(s) without val per-image predictions left out." if left_out else ""), "",
             "| method | task | data | labels | n | sensitivity @ val t | specificity @ val t | t (min–max) |",
             "|---|---|---|---|---|---|---|---|"]
    for key in sorted(rows, key=lambda k: (method_key(k[0]), k[1], k[2], str(k[3]))):
        pts = rows[key]
        ts = [p["threshold"] for p in pts if not math.isnan(p["threshold"])]
        t_range = f"{min(ts):.3f}–{max(ts):.3f}" if ts else "n/a"
        lines.append(f"| {key[0]} | {key[1]} | {key[2]} | {key[3]} | {len(pts)} | "
                     f"{_mean_std([p['sensitivity'] for p in pts])} | {_mean_std([p['specificity'] for p in pts])} | "
                     f"{t_range} |")
    groups: Dict[Tuple[str, str, str, Any], List[Tuple[Dict[str, Any], Dict[str, Any]]]] = defaultdict(list)
    for r, ref in paired_runs(with_point, baseline):
        if r["best_metrics"] is not None and ref["best_metrics"] is not None:
            groups[(r["method"], r["task"], r["dataset"], r["labels"])].append((r, ref))
    if groups:
        against = f"`{baseline}`" if baseline else "supervised-only"
        lines += ["", f"Paired against {against} of the same {unit[:-1]}: Δ [95 % CI] in percentage points, paired "
                      f"bootstrap over test images (as the paired-gain table); ahead/behind only where it excludes 0.",
                  "", "| method | task | data | labels | Δ sensitivity [95 % CI] | Δ specificity [95 % CI] |",
                  "|---|---|---|---|---|---|"]
        for key in sorted(groups, key=lambda k: (method_key(k[0]), k[1], k[2], str(k[3]))):
            pairs = sorted(groups[key], key=lambda p: str(p[0]["seed"]))
            cells = _paired_cells(pairs, points, n_resamples, seed)
            lines.append(f"| {key[0]} | {key[1]} | {key[2]} | {key[3]} | {cells[0]} | {cells[1]} |")
    return "\n".join(lines)
