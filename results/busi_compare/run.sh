#!/usr/bin/env bash
# The comparison grid of PROTOCOL.md, resumable (finished runs are skipped, stopped ones resume from latest.pt).
#   bash results/busi_compare/run.sh WORKER     WORKER 0 or 1: two workers share the rows (even / odd), one
#                                               thread per run, so that two runs share the 2 cores.
#   RUNS: parent of the run folders (default runs/busi_compare); SPLITS: where splits/busi_d{0,1,2} are
#   (default splits); SEALED: the sealed grid of issue #22 whose supervised cls runs are re-scored (default
#   runs/busi_sealed). Rows run in PROTOCOL.md's order, each row's three draws before the next row.
set -euo pipefail
cd "$(dirname "$0")/../.."
worker=${1:?usage: run.sh 0|1}
PY=${PY:-.venv/bin/python}
RUNS=${RUNS:-runs/busi_compare}
SPLITS=${SPLITS:-splits}
SEALED=${SEALED:-runs/busi_sealed}
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1

if [ "$worker" = 0 ]; then  # supervised + EM prior at test time: the sealed grid's cls supervised runs re-scored
  for s in 0 1 2; do
    out="$RUNS/cls_supervised_em/supervised_n144_s$s"
    if [ ! -f "$out/final_metrics.json" ]; then
      $PY Code/rescore.py "$SEALED/cls/supervised_n144_s$s" --out "$out" --set eval.prior_correction=pool \
        || echo "re-scoring $SEALED/cls/supervised_n144_s$s failed" >&2
    fi
  done
fi

# name | entry | method | settings beyond configs/busi/cpu.yaml
rows=(
  "seg_fixmatch|seg|fixmatch|"
  "seg_mean_teacher|seg|mean_teacher|"
  "seg_unimatch|seg|unimatch|"
  "seg_bcp|seg|bcp|"
  "cls_fixmatch|cls|fixmatch|"
  "cls_fixmatch_prior|cls|fixmatch|ssl.prior_aware=true ssl.class_ratio=pool"
  "cls_freematch|cls|freematch|"
  "cls_mean_teacher|cls|mean_teacher|"
  "cls_hermes|cls|hermes|"
  "cls_hermes_prior|cls|hermes|ssl.prior_aware=true ssl.class_ratio=pool"
  "seg_hermes_no_image_contrast|seg|hermes|components.image_contrast=false"
  "seg_hermes_no_pixel_contrast|seg|hermes|components.pixel_contrast=false"
  "seg_hermes_no_consistency|seg|hermes|components.consistency=false"
  "seg_hermes_no_saliency|seg|hermes|model.saliency=false"
)
for i in "${!rows[@]}"; do
  [ $((i % 2)) = "$worker" ] || continue
  IFS='|' read -r name entry method settings <<< "${rows[$i]}"
  extra=()
  [ -n "$settings" ] && extra=(--set $settings)
  $PY Code/run_experiments.py --config configs/busi/cpu.yaml --methods "$method" --labels 144 --draws 0 1 2 \
    --data "$SPLITS/busi_d{draw}" --entry "$entry" --out "$RUNS/$name" "${extra[@]}" \
    || echo "row $name: run_experiments.py exited non-zero; going on with the next row" >&2
done
