#!/usr/bin/env bash
# Refresh results/busi/ from the run folders under runs/busi/ (tables by report.py; per run the small files only:
# config, metrics.csv, pseudo-label diagnostics, final metrics of every finished run; never checkpoints or event
# files).
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
source results/copy_run_files.sh
rm -rf results/busi/seg results/busi/cls results/busi/runs
for task in seg cls; do
  if ls runs/busi/$task/*/final_metrics.json >/dev/null 2>&1; then
    OMP_NUM_THREADS=1 $PY Code/report.py --force runs/busi/$task --out results/busi/$task > /dev/null
  fi
done
# the ablation table: each ablation run beside the grid's seed-0 Hermes run of its entry; report.py names every
# row by the config keys that set it apart (an unfinished run is left out)
rm -rf results/busi/ablation/table
# (cls_prior_aware/ is the run that became the cls grid's Hermes seed 0: listed once, as the grid's)
abl=$(find runs/busi/ablation -name final_metrics.json -not -path '*/cls_prior_aware/*' -printf '%h\n' 2>/dev/null | sort)
if [ -n "$abl" ]; then
  OMP_NUM_THREADS=1 $PY Code/report.py --force runs/busi/seg/hermes_n144_s0 runs/busi/cls/hermes_n144_s0 $abl \
    --out results/busi/ablation/table > /dev/null
fi
for done in $(find runs/busi -name final_metrics.json | sort); do  # finished runs only
  d=$(dirname "$done")
  name=${d#runs/busi/}
  copy_run_files "$d" "results/busi/runs/$name"
done
echo "results/busi: $(find results/busi/runs -name metrics.csv | wc -l) finished runs copied"
