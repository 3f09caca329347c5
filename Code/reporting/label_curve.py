"""The label-efficiency curve of ``make_figures.py label-curve`` (README "Label-efficiency simulation").

Reads the ``rounds.csv`` of one or more ``simulate_labeling.py`` folders and, per row, the run's sealed test
metrics in ``final_metrics.json``: ``test_at_best_val`` (``--select best``: the step chosen on val) or
``test_at_final`` (``--select final``). Per (metric, strategy, method, labels) the values v_1 … v_n over draws
(seeds, and simulation folders) give, in percent: mean = Σ v_i / n, std = sample standard deviation (ddof = 1;
empty when n = 1), min, max, n. The figure has one panel per metric: x = labels, y = mean, one line per strategy
× method, shaded between min and max over draws. The table (:data:`TABLE_COLUMNS`) is written beside it.
"""
from __future__ import annotations

import csv
import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

from Code.errors import UserError

TABLE_COLUMNS = ("metric", "strategy", "method", "labels", "mean", "std", "min", "max", "n")
SELECT_KEY = {"best": "test_at_best_val", "final": "test_at_final"}


def read_rounds(sim: Path) -> List[Dict[str, str]]:
    path = Path(sim) / "rounds.csv"
    if not path.is_file():
        raise UserError(f"no rounds.csv in {sim}: 'label-curve' draws simulate_labeling.py folders")
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        rows = list(reader)
    missing = [c for c in ("strategy", "seed", "labels", "method", "run") if c not in (reader.fieldnames or [])]
    if missing:
        raise UserError(f"{path}: no column {', '.join(missing)} (not a rounds.csv of simulate_labeling.py)")
    return rows


def _test_metrics(run: Path, select: str) -> Dict[str, float]:
    path = run / "final_metrics.json"
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot read {path} ({exc.__class__.__name__}); rounds.csv lists only finished runs") from None
    metrics = record.get(SELECT_KEY[select])
    if not metrics:
        raise UserError(f"{path} has no {SELECT_KEY[select]} (a split without val/ has no val-chosen step): "
                        "use --select final")
    return metrics


def collect(sims: Sequence[Path], metrics: Sequence[str], select: str) -> Dict[Tuple, List[float]]:
    """``{(metric, strategy, method, labels): [value in %, one per draw]}`` over the simulation folders; a draw
    (folder, seed) counts once per key."""
    values: Dict[Tuple, Dict[Tuple, float]] = defaultdict(dict)
    for sim in sims:
        for row in read_rounds(sim):
            measured = _test_metrics(Path(sim) / row["run"], select)
            for metric in metrics:
                if metric not in measured:
                    raise UserError(f"{Path(sim) / row['run'] / 'final_metrics.json'} has no metric {metric!r}")
                key = (metric, row["strategy"], row["method"], int(row["labels"]))
                values[key][(str(Path(sim).resolve()), row["seed"])] = 100.0 * float(measured[metric])
    return {key: list(draws.values()) for key, draws in values.items()}


def summarise(values: Dict[Tuple, List[float]]) -> List[Dict]:
    """The table rows (module docstring), sorted by metric, strategy, method, labels; NaN values are left out."""
    rows = []
    for key in sorted(values):
        finite = [v for v in values[key] if not math.isnan(v)]
        n = len(finite)
        mean = sum(finite) / n if n else math.nan
        std = math.sqrt(sum((v - mean) ** 2 for v in finite) / (n - 1)) if n > 1 else None
        rows.append(dict(zip(TABLE_COLUMNS, (*key, round(mean, 4), "" if std is None else round(std, 4),
                                             round(min(finite), 4) if n else "", round(max(finite), 4) if n else "",
                                             n))))
    return rows


def write_csv(path: Path, rows: List[Dict], columns: Sequence[str] = TABLE_COLUMNS) -> None:
    """``rows`` (dicts keyed by ``columns``) as a CSV file with a header; the curve table by default."""
    with Path(path).open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(columns))
        writer.writeheader()
        writer.writerows(rows)


def draw(fig_axes, rows: List[Dict], metrics: Sequence[str], select: str) -> None:
    """One panel per metric on ``fig_axes`` (a sequence of matplotlib axes)."""
    for ax, metric in zip(fig_axes, metrics):
        lines = defaultdict(list)
        for row in rows:
            if row["metric"] == metric and row["n"]:
                lines[(row["strategy"], row["method"])].append(row)
        for (strategy, method), points in sorted(lines.items()):
            points.sort(key=lambda r: r["labels"])
            x = [r["labels"] for r in points]
            line, = ax.plot(x, [r["mean"] for r in points], marker="o", linestyle="-" if method == "hermes" else "--",
                            label=f"{strategy} / {method}")
            ax.fill_between(x, [r["min"] for r in points], [r["max"] for r in points], color=line.get_color(),
                            alpha=0.15, linewidth=0)
        ax.set_xticks(sorted({r["labels"] for r in rows if r["metric"] == metric}))
        ax.set_title(f"test {metric} (%) at the {'val-chosen' if select == 'best' else 'final'} step")
        ax.set_xlabel("labeled images")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
