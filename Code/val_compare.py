"""Compare rows of finished runs on **val** only, before anyone looks at test.

    python Code/val_compare.py RUNS... [--baseline ROW] [--metrics dice auc ...] [--out FILE.md] [--force]

RUNS are run folders or folders containing runs (as for ``report.py``). Per run, the val metrics at its val-chosen
step (``final_metrics.json`` ``val_at_best``); per row, their mean and each run's value; the best row on val (seg:
Dice, cls: balanced accuracy, ties by AUC) and the best row that is not Hermes (the best baseline); with
``--baseline``, each row's paired Δ per seed against that row. Never reads a test metric: use it to apply a decision
rule written before the runs, then read test once with ``report.py``. Details: Code/reporting/val_choice.py.
"""
import _bootstrap  # noqa: F401

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

from Code.errors import UserError, run_cli
from Code.inference.metrics import METRIC_KEYS
from Code.outputs import prepare_output_file, text_file_starting, write_atomically
from Code.reporting.val_choice import load_val_runs, markdown, rows_of

TITLE = "# Val comparison"
DEFAULT_METRICS = ("dice", "accuracy", "balanced_accuracy", "auc")


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="Compare rows of finished runs on val only (never test).")
    parser.add_argument("runs", nargs="+", help="run folders or folders containing runs")
    parser.add_argument("--baseline", metavar="ROW", help="pair every row with this row, seed by seed")
    parser.add_argument("--metrics", nargs="+", default=list(DEFAULT_METRICS), metavar="NAME",
                        help=f"val metrics to show (default: {' '.join(DEFAULT_METRICS)})")
    parser.add_argument("--out", help="also write the Markdown to this file")
    parser.add_argument("--force", action="store_true", help="replace an --out file that val_compare.py wrote")
    args = parser.parse_args(argv)
    unknown = [m for m in args.metrics if m not in METRIC_KEYS]
    if unknown:
        raise UserError(f"--metrics {' '.join(unknown)}: not a metric; choose from {', '.join(METRIC_KEYS)}")
    results = load_val_runs(args.runs)
    text = f"{TITLE} ({len(results)} runs)\n\n" + markdown(rows_of(results), args.metrics, args.baseline) + "\n"
    if args.out:
        inputs = [(str(r["run"]), f"the run folder {r['run']}") for r in results]
        out = prepare_output_file(args.out, "val_compare.py", args.force, inputs, text_file_starting(TITLE),
                                  "a val comparison of val_compare.py")
        write_atomically(out, lambda tmp: Path(tmp).write_text(text))
        print(f"wrote {out}", file=sys.stderr)
    print(text, end="")
    return 0


if __name__ == "__main__":
    run_cli(main)
