"""Aggregate many training runs into the paper's tables: rows = methods, columns = label budgets, mean ± std.

Usage::

    python Code/report.py RUNS... [--out DIR] [--force] [--select best|final] [--plot FILE] [--include-incomplete]
                          [--per-seed KEY ...] [--baseline ROW] [--resamples N] [--bootstrap-seed S]
                          [--target-specificity S]

RUNS are run folders (holding ``metrics.csv`` and ``config.yaml``) or folders containing runs (searched
recursively). Per run, the test metrics of ``final_metrics.json`` are taken (the sealed test, scored once after
the last step): ``test_at_final`` or ``test_at_best_val`` — the step whose **val** metrics score highest by the run's
task (``best_score``: seg → Dice, cls → balanced accuracy; then val AUC, then the earliest step); test metrics are
never used to choose. A run without val (a split without ``val/``) has no ``best``: its final step is used and the
caption says so. The run's ``eval.select``
decides unless ``--select`` overrides it. Below the tables: the paired gain of each method over supervised-only
(Δ per shared seed, mean ± std, seeds ahead; ``Code/reporting/pairs.py``) and one line per run with test at the
val-chosen and at the final step (the per-seed pairs). ``--baseline ROW`` pairs every row with ROW instead (e.g.
pre-trained against from-scratch supervised-only); ``--per-seed KEY`` pools seeds whose config names a per-seed file
(``model.encoder_weights=runs/pretrain/busi64_s1/encoder.pth`` is read as ``…_s{seed}/…``). Each paired-gain row
also gets, from the runs' per-image test predictions (``final_metrics.json`` ``predictions``; the val-chosen row
reads the ``best`` CSVs, the final row the ``final`` ones), a paired bootstrap 95 % interval of Δ Dice, accuracy,
balanced accuracy and AUC over test images pooled over seeds (``--resamples``, default 2000, at least 2000;
``--bootstrap-seed``, default 0; ``Code/reporting/paired_stats.py``), the words "ahead"/"behind" (bold) only where
it excludes 0, else "within noise", and McNemar's exact p of accuracy per seed; runs without the CSVs say "no
per-image predictions". The intervals also go to ``report_intervals.csv``. Then **sensitivity at a specificity
chosen on val** (``Code/reporting/operating_point.py``): per run the threshold whose val specificity reaches
``--target-specificity`` (default 0.9), test sensitivity and specificity at it, and the paired Δ with intervals. Captions say whether rows are over seeds
on one labeled draw or over labeled draws (``draw_seed`` in each run's ``split.json``; the draw number in a split
folder's name is read as ``{draw}``, so draws pool) and how many runs had test curves. Cells are the
mean ± **sample** standard deviation (ddof = 1) over the runs (seeds) of one method and label budget, in percent. A cell with a single run shows its value and ``(n = 1)``, no
std; a cell with fewer runs than the table's fullest cell is marked ``(n=k)``. Runs of one cell are pooled as seeds
only when their configs agree in everything but the seed (and device, logging, workers); otherwise each config is
its own row, named by the differing settings (``hermes (train.iters=400)``). NaN values (e.g. AUC
of a one-class test set) are left out of a cell. Segmentation metrics (Dice, IoU) come from ``task: seg`` runs
and classification metrics from ``task: cls`` runs, as in the paper; a table falls back to the other task's runs
when there are none of its own (the caption says which). Runs without ``final_metrics.json`` (unfinished) are
skipped unless ``--include-incomplete``. Writes ``report.md`` and ``report.csv`` (long format) to ``--out``
(default: the first RUNS folder, or the parent of a run folder) and prints the Markdown; existing report files (and
``--plot``) are replaced only with ``--force`` and only when report.py wrote them (README "Outputs and --force").
"""
from __future__ import annotations

import _bootstrap  # noqa: F401

import argparse
import csv
import math
import sys
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from Code.errors import UserError, run_cli
from Code.outputs import matplotlib_file, prepare_output_file, text_file_starting, write_atomically
from Code.reporting.intervals import caption_note, compare, extra_columns, write_intervals_csv
from Code.reporting.operating_point import DEFAULT_TARGET, section as operating_point_section
from Code.reporting.paired_stats import MIN_RESAMPLES
from Code.reporting.pairs import gains_markdown, runs_markdown
from Code.reporting.provenance import annotate, caption, curves_note, unit_of
from Code.reporting.runs import (find_runs, method_key, read_run, refuse_repeated_seeds, settings_beyond_method,
                                 split_config_variants, template_seed)

TABLES = ("dice", "accuracy", "balanced_accuracy", "auc", "iou", "dice_global", "sensitivity", "specificity", "f1")
TITLES = {"dice": "Dice (%)", "dice_global": "Global Dice (%)", "iou": "IoU (%)", "accuracy": "Accuracy (%)",
          "balanced_accuracy": "Balanced accuracy (%)", "sensitivity": "Sensitivity (%)", "specificity": "Specificity (%)", "f1": "F1 malignant (%)",
          "auc": "AUC (%)"}
SEG_METRICS = {"dice", "dice_global", "iou"}


def mean_std(values: Sequence[float]) -> Tuple[float, float, int]:
    """``(mean, sample std with ddof=1 (0 for one value), n)`` of the finite values; NaNs when none."""
    vals = np.array([v for v in values if not math.isnan(v)], dtype=float)
    if vals.size == 0:
        return math.nan, math.nan, 0
    return float(vals.mean()), float(vals.std(ddof=1)) if vals.size > 1 else 0.0, int(vals.size)


def _column_key(col: Tuple[str, Any]) -> Tuple[str, int, float]:
    dataset, labels = col
    return (dataset, 1, 0.0) if not isinstance(labels, (int, float)) else (dataset, 0, -float(labels))


def build_table(results: List[Dict[str, Any]], metric: str) -> Optional[Dict[str, Any]]:
    """One metric's table: cells ``{(method, (dataset, labels)): (mean %, std %, n)}`` plus its layout."""
    own = "seg" if metric in SEG_METRICS else "cls"
    source = [r for r in results if r["task"] == own] or results
    cells_raw: Dict[Tuple[str, Tuple[str, Any]], List[float]] = defaultdict(list)
    for r in source:
        cells_raw[(r["method"], (r["dataset"], r["labels"]))].append(100.0 * r["metrics"][metric])
    cells = {key: mean_std(vals) for key, vals in cells_raw.items()}
    if all(n == 0 for _, _, n in cells.values()):
        return None
    return {"metric": metric, "title": TITLES[metric], "tasks": sorted({r["task"] for r in source}), "cells": cells,
            "methods": sorted({m for m, _ in cells}, key=method_key),
            "columns": sorted({c for _, c in cells}, key=_column_key),
            "selects": Counter(r["select"] for r in source), "runs": source}


def _column_name(col: Tuple[str, Any], several_datasets: bool) -> str:
    return f"{col[0]} {col[1]}" if several_datasets else f"{col[1]} labels"


def format_cell(cell: Optional[Tuple[float, float, int]], usual_n: int) -> str:
    """``mean ± std``, marked ``(n=k)`` when k differs from the table's usual n; a single run: ``mean (n = 1)``."""
    if cell is None or cell[2] == 0:
        return "n/a"
    mean, std, n = cell
    if n == 1:
        return f"{mean:.2f} (n = 1)"
    return f"{mean:.2f} ± {std:.2f}" + (f" (n={n})" if n != usual_n else "")


def table_markdown(table: Dict[str, Any]) -> str:
    """A Markdown table with its caption (selection used, source task, number of seeds)."""
    several = len({d for d, _ in table["columns"]}) > 1
    counts = Counter(n for _, _, n in table["cells"].values() if n)
    usual_n = max(counts)
    ns = sorted(counts)
    n_text = f"{ns[0]}" if len(ns) == 1 else f"{ns[0]}–{ns[-1]}"
    selects = ", ".join(f"{k} ({v} runs)" for k, v in sorted(table["selects"].items()))
    if len(table["selects"]) == 1:
        selects = next(iter(table["selects"]))
    unit = {"draws": "draw(s)", "seeds": "seed(s)"}.get(unit_of(table["runs"]), "seed(s)/draw(s)")
    title = (f"**{table['title']}** — test, mean ± sample std (ddof=1) {caption(table['runs'])}; evaluation per "
             f"run: {selects}; from {'/'.join(table['tasks'])} runs; n = {n_text} {unit} per cell.")
    header = ["method", *(_column_name(c, several) for c in table["columns"])]
    lines = [title, "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for method in table["methods"]:
        row = [format_cell(table["cells"].get((method, c)), usual_n) for c in table["columns"]]
        lines.append("| " + " | ".join([method, *row]) + " |")
    return "\n".join(lines)


def write_csv(tables: List[Dict[str, Any]], path: Path) -> None:
    """Long format: one line per (metric, method, dataset, labels) cell; mean and std in percent."""
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["metric", "method", "dataset", "labels", "mean", "std", "n", "task", "select"])
        for t in tables:
            select = "/".join(sorted(t["selects"]))
            for method in t["methods"]:
                for col in t["columns"]:
                    if (method, col) in t["cells"]:
                        mean, std, n = t["cells"][(method, col)]
                        writer.writerow([t["metric"], method, col[0], col[1], f"{mean:.4f}",
                                         f"{std:.4f}" if n > 1 else "", n,
                                         "/".join(t["tasks"]), select])


def plot_tables(tables: List[Dict[str, Any]], path: Path) -> None:
    """Grouped bar chart (groups = label budgets, bars = methods, error bars = std) of the Dice and accuracy tables."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [t for t in tables if t["metric"] in ("dice", "accuracy")]
    fig, axes = plt.subplots(1, len(shown), figsize=(5.5 * len(shown), 4), squeeze=False)
    every = sorted({m for t in shown for m in t["methods"]}, key=method_key)  # one colour per method
    for ax, t in zip(axes[0], shown):
        several = len({d for d, _ in t["columns"]}) > 1
        width = 0.8 / len(t["methods"])
        for i, method in enumerate(t["methods"]):
            cells = [t["cells"].get((method, c), (math.nan, 0.0, 0)) for c in t["columns"]]
            xs = np.arange(len(t["columns"])) + (i - (len(t["methods"]) - 1) / 2) * width
            ax.bar(xs, [c[0] for c in cells], width, yerr=[c[1] for c in cells], capsize=3, label=method,
                   color=f"C{every.index(method) % 10}")
        ax.set_xticks(np.arange(len(t["columns"])))
        ax.set_xticklabels([_column_name(c, several) for c in t["columns"]])
        ax.set_ylabel(t["title"])
        ax.set_title(f"{t['title']} (mean ± std)")
        ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


REPORT_FILES = (("report.md", "# Results"), ("report.csv", "metric,"), ("report_intervals.csv", "method,baseline,"))


def check_report_files(out: Path, plot: Optional[str], force: bool, results: List[Dict[str, Any]]) -> None:
    """The output-file rule (Code/outputs.py) for the REPORT_FILES and --plot, before anything is written: never a
    file of a run (what the report reads); an existing one only with ``force`` and only when report.py wrote it."""
    inputs = [(path, f"the run file {path}") for r in results for path in sorted(Path(r["run"]).iterdir())
              if path.is_file()]
    for name, first_line in REPORT_FILES:
        prepare_output_file(out / name, "report.py", force, inputs, text_file_starting(first_line),
                            f"a {name} of report.py", flag="file", alternative="choose another --out")
    if plot:
        prepare_output_file(plot, "report.py", force, inputs, matplotlib_file, "a figure drawn by matplotlib",
                            flag="--plot")


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Mean ± std tables (methods × label budgets) from training runs.")
    parser.add_argument("runs", nargs="+", help="run folders or folders containing runs")
    parser.add_argument("--out", help="folder for report.md and report.csv (default: first RUNS folder)")
    parser.add_argument("--select", choices=("best", "final"), help="override each run's eval.select")
    parser.add_argument("--plot", help="also draw a grouped bar chart of the Dice and accuracy tables to this file")
    parser.add_argument("--force", action="store_true", help="replace the report files and --plot that report.py "
                        "wrote earlier (README: Outputs and --force)")
    parser.add_argument("--include-incomplete", action="store_true", help="also use runs without final_metrics.json")
    parser.add_argument("--per-seed", nargs="+", default=[], metavar="KEY",
                        help="config keys whose value names the run's seed (e.g. model.encoder_weights="
                             "runs/pretrain/busi64_s1/encoder.pth): the seed is read as {seed}, so seeds pool into one row")
    parser.add_argument("--baseline", metavar="ROW",
                        help="pair every row with this row (e.g. 'supervised (model.encoder_weights=None)') instead "
                             "of with supervised-only")
    parser.add_argument("--resamples", type=int, default=MIN_RESAMPLES,
                        help=f"bootstrap resamples of the paired intervals (at least {MIN_RESAMPLES})")
    parser.add_argument("--bootstrap-seed", type=int, default=0, help="seed of the bootstrap resampling")
    parser.add_argument("--target-specificity", type=float, default=DEFAULT_TARGET, metavar="S",
                        help="the val specificity that chooses each run's operating threshold for the 'sensitivity at "
                             f"a specificity chosen on val' table (default {DEFAULT_TARGET})")
    args = parser.parse_args(argv)
    if not 0.0 < args.target_specificity <= 1.0:
        raise UserError(f"--target-specificity {args.target_specificity}: must be in (0, 1]")
    if args.resamples < MIN_RESAMPLES:
        raise UserError(f"--resamples {args.resamples}: at least {MIN_RESAMPLES} resamples are needed")
    return args


def load_results(args: argparse.Namespace) -> List[Dict[str, Any]]:
    """The runs to report, one result dict each (``runs.read_run`` plus ``draw_seed`` and ``test_curves``), with
    rows split by config and seeds templated; refuses repeated seeds and an unknown ``--baseline``."""
    results = []
    for run in find_runs(args.runs):
        if not args.include_incomplete and not (run / "final_metrics.json").is_file():
            print(f"note: skipping unfinished run {run} (use --include-incomplete)", file=sys.stderr)
            continue
        result = read_run(run, args.select)
        if result is None:
            print(f"note: skipping {run}: no test metrics (no final_metrics.json, no test curves)", file=sys.stderr)
            continue
        results.append(result)
    if not results:
        raise UserError("no finished runs with evaluations to report")
    annotate(results)  # before rows are formed: the split folders of labeled draws pool as {draw}
    template_seed(results, args.per_seed)
    for note in split_config_variants(results):
        print(f"note: {note}", file=sys.stderr)
    refuse_repeated_seeds(results)
    rows = sorted({r["method"] for r in results}, key=method_key)
    if args.baseline is not None and args.baseline not in rows:
        raise UserError(f"--baseline {args.baseline!r} is not a row of this report; rows: {', '.join(rows)}")
    return results


def paired_section(results: List[Dict[str, Any]], args: argparse.Namespace) -> Tuple[Optional[str], Dict[Any, Any]]:
    """The paired-gain table with its interval and McNemar columns (None without pairs), and the comparisons."""
    comparisons = compare(results, args.baseline, args.resamples, args.bootstrap_seed)
    unit = unit_of(results).replace("/", " or ")
    headers, cells = extra_columns(comparisons, unit)
    note = caption_note(args.resamples, args.bootstrap_seed)
    if curves_note(results):
        note += f" {curves_note(results)}."
    return gains_markdown(results, args.baseline, (headers, cells, note), unit), comparisons


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    results = load_results(args)
    tables = [t for t in (build_table(results, m) for m in TABLES) if t is not None]
    gains, comparisons = paired_section(results, args)
    operating = operating_point_section(results, args.baseline, args.target_specificity, args.resamples,
                                        args.bootstrap_seed, unit_of(results).replace("/", " or "))
    extras = [part for part in (settings_beyond_method(results), gains, operating) if part]
    text = "\n\n".join([*(table_markdown(t) for t in tables), *extras, runs_markdown(results)]) + "\n"
    first = Path(args.runs[0])
    out = Path(args.out) if args.out else (first.parent if (first / "metrics.csv").is_file() else first)
    check_report_files(out, args.plot, args.force, results)
    write_atomically(out / "report.md", lambda tmp: tmp.write_text(f"# Results ({len(results)} runs)\n\n{text}"))
    write_atomically(out / "report.csv", lambda tmp: write_csv(tables, tmp))
    write_atomically(out / "report_intervals.csv",
                     lambda tmp: write_intervals_csv(comparisons, tmp, args.resamples, args.bootstrap_seed))
    print(text, end="")
    print(f"wrote {out / 'report.md'}, {out / 'report.csv'} and {out / 'report_intervals.csv'}", file=sys.stderr)
    if args.plot:
        write_atomically(Path(args.plot), lambda tmp: plot_tables(tables, tmp))
        print(f"wrote {args.plot}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    run_cli(main)
