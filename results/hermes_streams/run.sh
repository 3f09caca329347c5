#!/usr/bin/env bash
# The two candidates of PROTOCOL.md, resumable (finished runs are skipped, stopped ones resume from latest.pt).
#   bash results/hermes_streams/run.sh WORKER     WORKER 0: copy-paste, 1: feature perturbation, 2: the relative
#                                                 class-adaptive threshold (PROTOCOL_relative_threshold.md); one thread each
#   RUNS: parent of the run folders (default runs/hermes_streams); SPLITS: where splits/busi_d{0,1,2} are.
set -euo pipefail
cd "$(dirname "$0")/../.."
worker=${1:?usage: run.sh 0|1|2}
PY=${PY:-.venv/bin/python}
RUNS=${RUNS:-runs/hermes_streams}
SPLITS=${SPLITS:-splits}
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
case "$worker" in
  0) name=copy_paste; settings="hermes.copy_paste=1.0" ;;
  1) name=feature_perturbation; settings="hermes.feature_perturbation=0.5" ;;
  2) name=relative_threshold; settings="ssl.class_ratio=relative" ;;
  *) echo "run.sh: WORKER must be 0, 1 or 2, got '$worker'" >&2; exit 2 ;;
esac
$PY Code/run_experiments.py --config configs/busi/cpu.yaml --methods hermes --labels 144 --draws 0 1 2 \
  --data "$SPLITS/busi_d{draw}" --entry seg --out "$RUNS/$name" --set $settings
