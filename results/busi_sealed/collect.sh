#!/usr/bin/env bash
# Refresh results/busi_sealed/ from the sealed-test BUSI grid (PROTOCOL.md): per finished run its small files
# (config, metrics.csv, pseudo-label diagnostics, final_metrics.json, test_predictions_*.csv; never checkpoints or
# event files), the three draws' split lists, and report.py's tables over the rows (methods) whose three draws have
# all finished (PROTOCOL.md: test numbers are read when all three draws of a table's rows are done).
#   RUNS: the grid's run folder (default runs/busi_sealed); SPLITS: where splits/busi_d{0,1,2} are (default splits)
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
RUNS=${RUNS:-runs/busi_sealed}
SPLITS=${SPLITS:-splits}
source results/copy_run_files.sh
out=results/busi_sealed
for d in 0 1 2; do  # the split lists (no images): test/val identical across draws, labeled draws differ
  src="$SPLITS/busi_d$d"
  if [ -f "$src/split.json" ]; then
    rm -rf "$out/split_lists/d$d"
    (cd "$src" && find . -name '*.txt' -o -name split.json) | while read -r f; do
      mkdir -p "$out/split_lists/d$d/$(dirname "$f")" && cp "$src/$f" "$out/split_lists/d$d/$f"
    done
  fi
done
rm -rf "$out/runs"
for done in $(find "$RUNS" -name final_metrics.json 2>/dev/null | sort); do  # finished runs only
  run=$(dirname "$done")
  copy_run_files "$run" "$out/runs/${run#$RUNS/}"
done
complete() {  # the run folders of method $2 in $1 if all three draws finished (PROTOCOL.md: a row's test numbers
  local n=0    # are read only then)
  for s in 0 1 2; do [ -f "$1/${2}_n144_s$s/final_metrics.json" ] && n=$((n + 1)); done
  if [ "$n" -eq 3 ]; then for s in 0 1 2; do echo "$1/${2}_n144_s$s"; done; fi
}
declare -A expected=([seg]="supervised hermes fixmatch" [cls]="supervised hermes")
for task in seg cls; do
  rows=()
  for m in ${expected[$task]}; do rows+=($(complete "$RUNS/$task" "$m")); done
  if [ "${#rows[@]}" -le 3 ]; then
    echo "$task: fewer than two rows with all three draws finished; no table yet (PROTOCOL.md)"
    continue
  fi
  OMP_NUM_THREADS=1 $PY Code/report.py --force "${rows[@]}" --out "$out/$task" > /dev/null
  echo "$task: table over $(( ${#rows[@]} / 3 )) rows with all three draws finished"
  if [ "$task" = seg ] && [ -n "$(complete "$RUNS/seg" fixmatch)" ] && [ -n "$(complete "$RUNS/seg" hermes)" ]; then
    OMP_NUM_THREADS=1 $PY Code/report.py --force "${rows[@]}" --out "$out/seg_vs_fixmatch" \
      --baseline 'fixmatch (fixmatch.teacher=ema, fixmatch.unsup_rampup=0.1)' > /dev/null
  fi
done
echo "$out: $(find "$out/runs" -name final_metrics.json 2>/dev/null | wc -l) finished runs copied"
