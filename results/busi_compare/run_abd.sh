#!/usr/bin/env bash
# The ABD row of ADDENDUM_abd.md, resumable (finished runs skipped, stopped ones resumed from latest.pt).
#   bash results/busi_compare/run_abd.sh      one thread; RUNS (default runs/busi_compare), SPLITS (default splits)
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
RUNS=${RUNS:-runs/busi_compare}
SPLITS=${SPLITS:-splits}
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
$PY Code/run_experiments.py --config configs/busi/cpu.yaml --methods abd --labels 144 --draws 0 1 2 \
  --data "$SPLITS/busi_d{draw}" --entry seg --out "$RUNS/seg_abd"
