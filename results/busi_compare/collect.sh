#!/usr/bin/env bash
# Refresh results/busi_compare/ from the comparison grid (PROTOCOL.md): each finished run's small files (never
# checkpoints or event files) and report.py's tables over the rows whose three draws have all finished (PROTOCOL.md:
# a row's test numbers are read only then). Rows reused from the sealed grid of issue #22 come from SEALED.
#   RUNS: the grid's run folders (default runs/busi_compare); SEALED: the sealed grid (default runs/busi_sealed)
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
RUNS=${RUNS:-runs/busi_compare}
SEALED=${SEALED:-runs/busi_sealed}
source results/copy_run_files.sh
out=results/busi_compare
rm -rf "$out/runs"
for done in $(find "$RUNS" -name final_metrics.json 2>/dev/null | sort); do  # finished runs only
  run=$(dirname "$done")
  if [ ! -f "$run/val_predictions_final.csv" ] && [ -f "$run/checkpoints/latest.pt" ]; then  # the frozen grid's
    OMP_NUM_THREADS=1 $PY -m Code.engine.val_predictions "$run" > /dev/null  # trainer wrote no val CSVs (val only)
  fi
  copy_run_files "$run" "$out/runs/${run#$RUNS/}"
done

complete() {  # the run folders of a row folder ($1) whose method prefix is $2, if all three draws finished
  local n=0
  for s in 0 1 2; do [ -f "$1/${2}_n144_s$s/final_metrics.json" ] && n=$((n + 1)); done
  if [ "$n" -eq 3 ]; then for s in 0 1 2; do echo "$1/${2}_n144_s$s"; done; fi
}
for entry in seg cls; do
  rows=()
  for m in supervised hermes fixmatch; do rows+=($(complete "$SEALED/$entry" "$m")); done
  for folder in "$RUNS/${entry}_"*; do
    [ -d "$folder" ] || continue
    for m in supervised fixmatch mean_teacher unimatch bcp abd freematch hermes; do rows+=($(complete "$folder" "$m")); done
  done
  [ "${#rows[@]}" -gt 3 ] || { echo "$entry: fewer than two finished rows; no table yet"; continue; }
  baseline=()
  [ "$entry" = cls ] && [ -d "$RUNS/cls_supervised_em" ] && baseline=(--baseline "supervised (eval.prior_correction=none)")
  OMP_NUM_THREADS=1 $PY Code/report.py --force "${rows[@]}" "${baseline[@]}" --out "$out/$entry" > /dev/null
  echo "$entry: table over $(( ${#rows[@]} / 3 )) finished rows in $out/$entry/report.md"
done
vs=($(complete "$SEALED/seg" hermes) $(complete "$RUNS/seg_fixmatch" fixmatch))  # Hermes against FixMatch as published
if [ "${#vs[@]}" -eq 6 ]; then
  OMP_NUM_THREADS=1 $PY Code/report.py --force "${vs[@]}" --baseline fixmatch --out "$out/seg_vs_fixmatch" > /dev/null
  echo "seg: Hermes against FixMatch (as published) in $out/seg_vs_fixmatch/report.md"
fi
# the component table: each finished component row against the sealed Hermes runs (one report per row, so that the
# two rows differ in that one key: report.py names them "hermes (KEY=True)" and "hermes (KEY=False)")
declare -A component_key=([no_image_contrast]=components.image_contrast [no_pixel_contrast]=components.pixel_contrast
                          [no_consistency]=components.consistency [no_saliency]=model.saliency)
hermes_runs=($(complete "$SEALED/seg" hermes))
for name in "${!component_key[@]}"; do
  c=($(complete "$RUNS/seg_hermes_$name" hermes))
  [ "${#c[@]}" -eq 3 ] && [ "${#hermes_runs[@]}" -eq 3 ] || continue
  OMP_NUM_THREADS=1 $PY Code/report.py --force "${hermes_runs[@]}" "${c[@]}" --baseline "hermes (${component_key[$name]}=True)" \
    --out "$out/components/$name" > /dev/null
  echo "seg: Hermes against Hermes $name in $out/components/$name/report.md"
done
echo "$out: $(find "$out/runs" -name final_metrics.json 2>/dev/null | wc -l) finished runs copied"
