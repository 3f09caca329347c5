#!/usr/bin/env bash
# The two rows of ADDENDUM_mean_teacher.md (Mean Teacher at the segmentation ports' consistency weight 0.1),
# resumable (finished runs skipped, stopped ones resumed from latest.pt).
#   bash results/busi_compare/run_mean_teacher_addendum.sh WORKER     WORKER 0: the seg row, 1: the cls row
#   RUNS (default runs/busi_compare), SPLITS (default splits); one thread per run
set -euo pipefail
cd "$(dirname "$0")/../.."
worker=${1:?usage: run_mean_teacher_addendum.sh 0|1}
PY=${PY:-.venv/bin/python}
RUNS=${RUNS:-runs/busi_compare}
SPLITS=${SPLITS:-splits}
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
case "$worker" in
  0) entry=seg ;;
  1) entry=cls ;;
  *) echo "run_mean_teacher_addendum.sh: WORKER must be 0 or 1, got '$worker'" >&2; exit 2 ;;
esac
$PY Code/run_experiments.py --config configs/busi/cpu.yaml --methods mean_teacher --labels 144 --draws 0 1 2 \
  --data "$SPLITS/busi_d{draw}" --entry "$entry" --out "$RUNS/${entry}_mean_teacher_consistency0.1" \
  --set mean_teacher.consistency=0.1
