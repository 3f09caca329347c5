#!/usr/bin/env bash
# Refresh results/pretrain/ from the run folders (report.py tables; per run the small files only, never
# checkpoints, encoders or event files):
#   runs/pretrain/busi_s0      -> busi_s0/    (128x128, 400 steps: the first pilot)
#   runs/pretrain/busi64_s0    -> busi64_s0/  (64x64, 1600 steps)
#   runs/busi_pretrained/{seg,cls}   -> seg/, cls/, runs/             (fine-tunes from busi_s0)
#   runs/busi_pretrained64/{seg,cls} -> busi64_s0/{seg,cls,runs}/     (fine-tunes from busi64_s0)
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
source results/copy_run_files.sh
out=results/pretrain
pretrain_files() {  # pretrain_files RUN DEST
  if [ -f "$1/encoder.pth" ]; then
    mkdir -p "$2"
    cp "$1/config.yaml" "$1/metrics.csv" "$2/"
    OMP_NUM_THREADS=1 $PY -m Code.reporting.scalars "$1/tensorboard" "$2/curve.csv" > /dev/null
  fi
}
finetunes() {  # finetunes RUNS_ROOT DEST_TABLES DEST_RUNS: each finished fine-tune beside the from-scratch run of the
  for task in seg cls; do  # same method and seed in runs/busi/TASK (the BUSI grid), when that run exists
    if ls "$1/$task"/*/final_metrics.json >/dev/null 2>&1; then
      rm -rf "$2/$task" "$3/$task"
      runs=()
      for done in "$1/$task"/*/final_metrics.json; do
        d=$(dirname "$done")
        runs+=("$d")
        if [ -f "runs/busi/$task/$(basename "$d")/final_metrics.json" ]; then runs+=("runs/busi/$task/$(basename "$d")"); fi
      done
      OMP_NUM_THREADS=1 $PY Code/report.py "${runs[@]}" --out "$2/$task" > /dev/null
      for done in "$1/$task"/*/final_metrics.json; do
        copy_run_files "$(dirname "$done")" "$3/$task/$(basename "$(dirname "$done")")"
      done
    fi
  done
}
pretrain_files runs/pretrain/busi_s0 $out/busi_s0
pretrain_files runs/pretrain/busi64_s0 $out/busi64_s0
finetunes runs/busi_pretrained $out $out/runs
finetunes runs/busi_pretrained64 $out/busi64_s0 $out/busi64_s0/runs
