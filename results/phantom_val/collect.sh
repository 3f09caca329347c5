#!/usr/bin/env bash
# Refresh results/phantom_val/ from the phantom run folders (tables by report.py; per run the small files only:
# config, metrics.csv, pseudo-label diagnostics, final metrics of every finished run; never checkpoints or event
# files). Folders: runs/phantom_comparison (seg_train.py grid), runs/phantom_cls (cls_train.py grid),
# runs/phantom_oracle (supervised-only with every train label: the head-room), runs/phantom_noval (supervised-only
# on the split of the previous engine, no val/: why supervised-only rose), runs/phantom800/seg (the seg grid at
# the BUSI protocol's 800 iterations: schedule_decision.md), runs/phantom800/cls (the cls_train.py grid at 800).
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
source results/copy_run_files.sh
out=results/phantom_val
rm -rf $out/seg $out/cls $out/oracle $out/old_split $out/seg800 $out/cls800 $out/runs $out/report.md $out/report.csv
collect() {  # collect RUNS_DIR NAME
  if ls "$1"/*/final_metrics.json >/dev/null 2>&1; then
    OMP_NUM_THREADS=1 $PY Code/report.py --force "$1" --out "$out/$2" > /dev/null
    for done in "$1"/*/final_metrics.json; do
      d=$(dirname "$done")
      copy_run_files "$d" "$out/runs/$2/$(basename "$d")"
    done
  fi
}
collect runs/phantom_comparison seg
collect runs/phantom_cls cls
collect runs/phantom_oracle oracle
collect runs/phantom_noval old_split
collect runs/phantom800/seg seg800
collect runs/phantom800/cls cls800
# Hermes paired with FixMatch of the same seed (the 800-iteration seg grid)
if ls runs/phantom800/seg/fixmatch_*/final_metrics.json >/dev/null 2>&1; then
  OMP_NUM_THREADS=1 $PY Code/report.py --force runs/phantom800/seg --baseline 'fixmatch (fixmatch.teacher=ema, fixmatch.unsup_rampup=0.1)' --out "$out/seg800/vs_fixmatch" > /dev/null
fi
