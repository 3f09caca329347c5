"""Pseudo-label diagnostics of the BUSI seg runs, from committed files only: what each method's teacher keeps over
the second half of training (steps ≥ 400 of 800: after Hermes' contrast warm-up) and how right it is.

    python results/diagnostics/summarise.py > results/diagnostics/pseudo_labels.md

Inputs: each run's ``pseudo_labels.csv`` (results/busi_sealed/runs, results/busi_compare/runs; the columns are
defined in Code/engine/diagnostics.py, the truth being the pool's own masks and labels, never val or test) and
``hermes_seg_s<d>.csv`` here (TensorBoard scalars of the sealed Hermes runs, ``python -m Code.reporting.scalars``).
Per run: the mean over the logged steps ≥ 400; per row: mean ± sample std over the 3 labeled draws.
"""
import csv
import math
import statistics
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE.parent
ROWS = {  # row name: glob of its runs' pseudo_labels.csv
    "FixMatch, as published (student labels its weak view, τ = 0.95)":
        "busi_compare/runs/seg_fixmatch/fixmatch_n144_s*/pseudo_labels.csv",
    "FixMatch, Hermes' EMA teacher (τ = 0.95)": "busi_sealed/runs/seg/fixmatch_n144_s*/pseudo_labels.csv",
    "Hermes (dual threshold)": "busi_sealed/runs/seg/hermes_n144_s*/pseudo_labels.csv",
}
COLUMNS = {"seg_keep": "pixels kept", "seg_kept_precision": "kept lesion pixels that are lesion",
           "seg_kept_dice": "Dice of kept pseudo-mask", "cls_keep": "images kept",
           "cls_kept_accuracy_0": "kept 'benign' right", "cls_kept_accuracy_1": "kept 'malignant' right",
           "cls_pred_share_1": "teacher's malignant share", "cls_true_share_1": "pool's malignant share"}
HERMES = {"ssl/seg_class_ratio_1": "lesion share r_1 of the pixel pseudo-labels",
          "ssl/seg_threshold_1": "lesion-pixel threshold τ_1", "ssl/seg_keep_ratio_1": "lesion pixels kept",
          "ssl/seg_certain_ratio": "pixels passing entropy", "ssl/seg_confident_ratio": "pixels passing confidence",
          "ssl/cls_threshold_1": "malignant threshold τ_1", "ssl/cls_keep_ratio_1": "'malignant' images kept",
          "ssl/cls_certain_ratio": "images passing entropy", "ssl/cls_confident_ratio": "images passing confidence"}


def late_mean(path, column, start=400):
    values = []
    with open(path, newline="") as handle:
        for row in csv.DictReader(handle):
            if int(float(row["step"])) >= start and row.get(column) not in (None, "", "nan"):
                values.append(float(row[column]))
    return statistics.mean(values) if values else math.nan


def cell(values):
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return "n/a"
    sd = f" ± {100 * statistics.stdev(values):.1f}" if len(values) > 1 else ""
    return f"{100 * statistics.mean(values):.1f}{sd}"


def table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def main():
    print("# Pseudo-label diagnostics, BUSI 144 labels, seg runs (3 labeled draws)\n")
    print("Made by `summarise.py` from committed files. Percent, mean over the logged steps 400–800 of each run, then "
          "mean ± sample std over the 3 draws. Truth = the pool's own masks and labels (never val or test).\n")
    rows = []
    for name, pattern in ROWS.items():
        runs = sorted(RESULTS.glob(pattern))
        rows.append([f"{name} (n = {len(runs)})", *(cell([late_mean(p, c) for p in runs]) for c in COLUMNS)])
    print(table(["row", *COLUMNS.values()], rows))
    print("\nHermes' thresholds over the same steps (TensorBoard scalars of the sealed Hermes runs, "
          "`hermes_seg_s<d>.csv`), and at the last step:\n")
    runs = sorted(HERE.glob("hermes_seg_s*.csv"))
    rows = [[label, cell([late_mean(p, tag) for p in runs]), cell([late_mean(p, tag, 800) for p in runs])]
            for tag, label in HERMES.items()]
    rows.append(["entropy threshold η / ln 2", cell([late_mean(p, "ssl/seg_entropy_threshold") / math.log(2) for p in runs]),
                 cell([late_mean(p, "ssl/seg_entropy_threshold", 800) / math.log(2) for p in runs])])
    print(table(["quantity", "steps 400–800", "step 800"], rows))


if __name__ == "__main__":
    main()
