"""Comparing rows of runs on **val** only: the numbers a decision rule written before its runs may use.

Per finished run, ``final_metrics.json`` ``val_at_best``: the val metrics at the step the trainer chose on val (seg:
Dice; cls: balanced accuracy; ties by AUC, then the earliest step). No test metric is read, kept or printed here,
so a setting, a candidate or the "best baseline" can be chosen before anyone looks at test.

Rows are formed as ``report.py`` forms them (method and its own settings, runs whose configs differ split into rows
named by the differing keys, labeled draws pooled as ``{draw}``), and kept apart by task. For a row r and a
baseline row b of the same task, data set and label budget, runs are paired by seed (one seed per labeled draw in
``run_experiments.py``'s grids)::

    m_r  = (1/n) Σ_s v_{r,s}                 row mean of val metric v over its n runs
    Δ_s  = v_{r,s} − v_{b,s}                 paired difference for each seed s that both rows have
    best = argmax_r (m_r[primary], m_r[tie])  primary: seg → dice, cls → balanced_accuracy; tie: auc
"""
from __future__ import annotations

import json
import math
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from Code.errors import UserError
from Code.inference.metrics import METRIC_KEYS
from Code.reporting.provenance import annotate
from Code.reporting.runs import find_runs, method_key, refuse_repeated_seeds, run_identity, split_config_variants

PRIMARY = {"seg": ("dice", "auc"), "cls": ("balanced_accuracy", "auc")}
Row = Tuple[str, str, str, Any]  # (task, method row, data set, labels)


def read_val_run(run: Path) -> Optional[Dict[str, Any]]:
    """One finished run's identity and its ``val_at_best`` metrics (fractions); None when it has not finished.
    A finished run without ``val_at_best`` (a split without ``val/``) is a UserError: it cannot be compared on val."""
    record = run / "final_metrics.json"
    if not record.is_file():
        return None
    try:
        saved_metrics = json.loads(record.read_text())
    except json.JSONDecodeError as exc:
        raise UserError(f"{record}: not valid JSON ({exc})") from None
    val = saved_metrics.get("val_at_best") if isinstance(saved_metrics, dict) else None
    if not isinstance(val, dict):
        raise UserError(f"{record}: no val_at_best (a run without val/ cannot be compared on val)")
    return {**run_identity(run, "final_metrics.json"), "step": saved_metrics.get("best_val_step"),
            "val": {k: float(val.get(k, math.nan)) for k in METRIC_KEYS}}


def load_val_runs(paths: Sequence[str]) -> List[Dict[str, Any]]:
    """The finished runs found in ``paths`` (unfinished ones are named on stderr and left out), grouped into rows
    as report.py does; a UserError when none has finished or one row holds a seed twice."""
    results = []
    for run in find_runs(paths):
        result = read_val_run(run)
        if result is None:
            print(f"note: skipping unfinished run {run}", file=sys.stderr)
            continue
        results.append(result)
    if not results:
        raise UserError(f"no finished runs in {', '.join(paths)}")
    annotate(results)
    for note in split_config_variants(results):
        print(f"note: {note}", file=sys.stderr)
    refuse_repeated_seeds(results)
    return results


def rows_of(results: List[Dict[str, Any]]) -> Dict[Row, Dict[Any, Dict[str, float]]]:
    """``{(task, method, dataset, labels): {seed: val metrics}}``."""
    rows: Dict[Row, Dict[Any, Dict[str, float]]] = defaultdict(dict)
    for r in results:
        rows[(r["task"], r["method"], r["dataset"], r["labels"])][r["seed"]] = r["val"]
    return dict(rows)


def row_mean(values: Dict[Any, Dict[str, float]], metric: str) -> float:
    """m_r: the mean over the row's runs of ``metric`` (NaNs left out; NaN when none is finite)."""
    vals = [v[metric] for v in values.values() if not math.isnan(v[metric])]
    return float(np.mean(vals)) if vals else math.nan


def paired_deltas(row: Dict[Any, Dict[str, float]], baseline: Dict[Any, Dict[str, float]], metric: str
                  ) -> Dict[Any, float]:
    """Δ_s = v_{r,s} − v_{b,s} for every seed s of both rows, in seed order."""
    return {s: row[s][metric] - baseline[s][metric] for s in sorted(set(row) & set(baseline), key=str)}


def best_row(rows: Dict[Row, Dict[Any, Dict[str, float]]], candidates: Sequence[Row]) -> Optional[Row]:
    """The candidate with the highest mean val primary metric of its task, ties by mean val AUC (NaN ranks last)."""
    def score(row: Row) -> Tuple[float, float]:
        primary, tie = PRIMARY.get(row[0], PRIMARY["seg"])
        return tuple(-math.inf if math.isnan(x) else x for x in (row_mean(rows[row], primary),
                                                                  row_mean(rows[row], tie)))
    return max(candidates, key=score) if candidates else None


def _pct(x: float, signed: bool = False) -> str:
    return "n/a" if math.isnan(x) else (f"{100 * x:+.2f}" if signed else f"{100 * x:.2f}")


def markdown(rows: Dict[Row, Dict[Any, Dict[str, float]]], metrics: Sequence[str], baseline: Optional[str] = None,
             exclude_from_best: str = "hermes") -> str:
    """Per entry (task, data set, labels): each row's mean val metrics and its runs' values, the best row overall
    and the best row whose method is not ``exclude_from_best`` (the best baseline), and, with ``baseline``, each
    row's paired Δ per seed against it (mean, and in how many seeds Δ > 0)."""
    if baseline is not None and not any(k[1] == baseline for k in rows):
        raise UserError(f"--baseline {baseline!r} is not a row of these runs; rows: "
                        f"{', '.join(sorted({k[1] for k in rows}, key=method_key))}")
    entries = sorted({(t, d, str(n)) for t, _, d, n in rows})
    parts = []
    for task, dataset, labels in entries:
        entry = {k: v for k, v in rows.items() if (k[0], k[2], str(k[3])) == (task, dataset, labels)}
        order = sorted(entry, key=lambda k: method_key(k[1]))
        primary, tie = PRIMARY.get(task, PRIMARY["seg"])
        lines = [f"## {task} · {dataset} · {labels} labels", "",
                 f"Val at the val-chosen step, percent: mean over runs, then each run (seed: value). Choice by "
                 f"mean val {primary}, ties by {tie}.", "",
                 "| row | n | " + " | ".join(metrics) + f" | {primary} per seed |", "|" + "---|" * (len(metrics) + 3)]
        for k in order:
            per_seed = ", ".join(f"{s}: {_pct(v[primary])}" for s, v in sorted(entry[k].items(), key=lambda i: str(i[0])))
            lines.append(f"| {k[1]} | {len(entry[k])} | " + " | ".join(_pct(row_mean(entry[k], m)) for m in metrics)
                         + f" | {per_seed} |")
        best = best_row(entry, order)
        others = [k for k in order if k[1].split(" (")[0] != exclude_from_best]
        best_other = best_row(entry, others)
        lines += ["", f"- best row on val: **{best[1]}**"]
        if best_other is not None:
            lines.append(f"- best row on val other than {exclude_from_best} (the best baseline): **{best_other[1]}**")
        ref = next((k for k in order if k[1] == baseline), None)
        if baseline is not None and ref is not None:
            lines += ["", f"Paired Δ against **{baseline}** (points; per seed, mean, seeds with Δ > 0):", "",
                      "| row | " + " | ".join(f"Δ {m}" for m in metrics) + " |", "|" + "---|" * (len(metrics) + 1)]
            for k in order:
                if k == ref:
                    continue
                cells = []
                for m in metrics:
                    d = paired_deltas(entry[k], entry[ref], m)
                    finite = [x for x in d.values() if not math.isnan(x)]
                    mean = float(np.mean(finite)) if finite else math.nan
                    cells.append(f"{_pct(mean, True)} ({sum(x > 0 for x in finite)}/{len(finite)}; "
                                 + ", ".join(_pct(x, True) for x in d.values()) + ")")
                lines.append(f"| {k[1]} | " + " | ".join(cells) + " |")
        parts.append("\n".join(lines))
    return "\n\n".join(parts)
