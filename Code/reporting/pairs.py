"""Per-run lines and paired seed-by-seed gains over supervised-only, for report.py.

A gain is paired: for each seed present in both, Δ = metric(method, seed) − metric(supervised, seed) on the same
task, data set and label budget, at the val-chosen step and at the final step. Reported as mean ± sample std of
Δ over seeds and the number of seeds in which the method is ahead (Δ > 0). When there are several supervised
variants (``supervised (model.encoder_weights=…)``), a run is paired with the one whose config agrees with its own
in what tells those variants apart (e.g. the same pre-trained encoder); ``baseline`` names one row that every other
row is paired with instead (e.g. ``supervised (model.encoder_weights=None)``: pre-trained against from scratch).
"""
from __future__ import annotations

import math
from collections import defaultdict
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from Code.reporting.runs import differing_keys, flat_config, method_key

PAIR_METRICS = ("dice", "accuracy", "balanced_accuracy", "auc")


def runs_markdown(results: List[Dict[str, Any]]) -> str:
    """One line per run: test metrics at the val-chosen step and at the final step (the per-seed pairs)."""
    def fmt(metrics: Optional[Dict[str, float]]) -> List[str]:
        return ["n/a" if metrics is None or math.isnan(metrics[k]) else f"{100 * metrics[k]:.2f}"
                for k in PAIR_METRICS]

    header = ["method", "task", "labels", "seed", "val-chosen step", *(f"{k} @val" for k in PAIR_METRICS),
              "final step", *(f"{k} @final" for k in PAIR_METRICS)]
    lines = ["**Per run** — test metrics (%) at the step chosen on val and at the final step.", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    order = sorted(results, key=lambda r: (method_key(r["method"]), r["task"], str(r["labels"]), str(r["seed"])))
    for r in order:
        best_step = "n/a (no val)" if r["best_step"] is None else str(r["best_step"])
        cells = [r["method"], r["task"], str(r["labels"]), str(r["seed"]), best_step, *fmt(r["best_metrics"]),
                 str(r["final_step"]), *fmt(r["final_metrics"])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _gain_cell(deltas: List[float]) -> str:
    vals = [d for d in deltas if not math.isnan(d)]
    if not vals:
        return "n/a"
    mean = 100 * float(np.mean(vals))
    spread = f" ± {100 * float(np.std(vals, ddof=1)):.2f}" if len(vals) > 1 else ""
    return f"{mean:+.2f}{spread} ({sum(d > 0 for d in vals)}/{len(vals)})"


def _partner(r: Dict[str, Any], candidates: List[Dict[str, Any]]) -> Optional[Dict[str, Any]]:
    """The supervised run among ``candidates`` (same task, data set, labels, seed) that ``r`` is compared with: the
    only one, or the one whose config agrees with ``r``'s in every key in which the candidates differ (e.g. the same
    pre-trained encoder); None when that does not single one out."""
    if len(candidates) <= 1:
        return candidates[0] if candidates else None
    flats = [flat_config(c["config"]) for c in candidates]
    keys = differing_keys(flats)
    own = flat_config(r["config"])
    matches = [c for c, f in zip(candidates, flats) if all(own.get(k) == f.get(k) for k in keys)]
    return matches[0] if len(matches) == 1 else None


def paired_runs(results: List[Dict[str, Any]], baseline: Optional[str] = None
                ) -> List[Tuple[Dict[str, Any], Dict[str, Any]]]:
    """``[(run, reference run)]``: each run outside the reference row with its run of the same task, data set,
    label budget and seed in the reference row: ``baseline`` when given, else supervised-only (:func:`_partner`
    chooses among several supervised variants). Runs without a partner are left out."""
    def is_ref(r: Dict[str, Any]) -> bool:
        return r["method"] == baseline if baseline else r["config"].get("method") == "supervised"

    refs: Dict[Tuple[Any, ...], List[Dict[str, Any]]] = defaultdict(list)
    for r in results:
        if is_ref(r):
            refs[(r["task"], r["dataset"], r["labels"], r["seed"])].append(r)
    pairs = []
    for r in results:
        if not is_ref(r):
            ref = _partner(r, refs.get((r["task"], r["dataset"], r["labels"], r["seed"]), []))
            if ref is not None:
                pairs.append((r, ref))
    return pairs


def paired_gains(results: List[Dict[str, Any]], baseline: Optional[str] = None
                 ) -> Dict[Tuple[str, str, str, Any, str], Dict[str, List[float]]]:
    """``{(method, task, dataset, labels, at): {metric: [Δ per shared seed]}}``, ``at`` ∈ {"val", "final"};
    Δ against the run's partner in the reference row (:func:`paired_runs`)."""
    gains: Dict[Tuple[str, str, str, Any, str], Dict[str, List[float]]] = defaultdict(lambda: defaultdict(list))
    for r, ref in paired_runs(results, baseline):
        for at, key in (("val", "best_metrics"), ("final", "final_metrics")):
            if r[key] is None or ref[key] is None:
                continue
            for metric in PAIR_METRICS:
                gains[(r["method"], r["task"], r["dataset"], r["labels"], at)][metric].append(
                    r[key][metric] - ref[key][metric])
    return gains


def gains_markdown(results: List[Dict[str, Any]], baseline: Optional[str] = None,
                   extra: Optional[Tuple[List[str], Dict[Tuple[Any, ...], List[str]], str]] = None,
                   unit: str = "seeds") -> Optional[str]:
    """The paired gains (see :func:`paired_gains`) as a Markdown table; None when no run has a partner. ``extra``:
    ``(headers, {gain key: cells}, caption note)`` of columns appended to each row (the paired intervals);
    ``unit`` names what the rows pool ("seeds" or "draws")."""
    gains = paired_gains(results, baseline)
    if not gains:
        return None
    headers, cells_of, note = extra or ([], {}, "")
    header = ["method", "task", "data", "labels", "test at", *(f"Δ {k}" for k in PAIR_METRICS), *headers]
    title, against = (f"Paired gain over {baseline}", f"`{baseline}`") if baseline else (
        "Paired gain over supervised-only", "supervised-only")
    variants = {r["method"] for r in results if r["config"].get("method") == "supervised"}
    several = " (the supervised row of the same settings, e.g. encoder)" if not baseline and len(variants) > 1 else ""
    lines = [f"**{title}** — test, percentage points, Δ = row − {against} of the same seed{several}; "
             f"mean ± sample std over {unit} ({unit} ahead / {unit})." + (f" {note}" if note else ""), "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    order = sorted(gains, key=lambda k: (method_key(k[0]), k[1], k[2], str(k[3]), k[4] != "val"))
    for method, task, dataset, labels, at in order:
        cells = gains[(method, task, dataset, labels, at)]
        label = "val-chosen step" if at == "val" else "final step"
        more = cells_of.get((method, task, dataset, labels, at), ["n/a"] * len(headers))
        lines.append("| " + " | ".join([method, task, dataset, str(labels), label,
                                        *(_gain_cell(cells[k]) for k in PAIR_METRICS), *more]) + " |")
    return "\n".join(lines)
