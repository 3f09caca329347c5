#!/usr/bin/env bash
# Refresh results/busi/ from the run folders under runs/busi/ (tables by report.py; per run the small files only:
# config, metrics.csv, pseudo-label diagnostics, final metrics; never checkpoints or event files).
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
rm -rf results/busi/seg results/busi/cls results/busi/runs
for task in seg cls; do
  if ls runs/busi/$task/*/final_metrics.json >/dev/null 2>&1; then
    OMP_NUM_THREADS=1 $PY Code/report.py runs/busi/$task --out results/busi/$task > /dev/null
  fi
done
for csv in $(find runs/busi -name metrics.csv | sort); do
  d=$(dirname "$csv")
  name=${d#runs/busi/}
  mkdir -p "results/busi/runs/$name"
  for f in config.yaml metrics.csv pseudo_labels.csv final_metrics.json; do
    if [ -f "$d/$f" ]; then cp "$d/$f" "results/busi/runs/$name/"; fi
  done
done
echo "results/busi: $(find results/busi/runs -name metrics.csv | wc -l) runs copied"
