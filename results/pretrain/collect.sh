#!/usr/bin/env bash
# Refresh results/pretrain/ from the run folders (report.py tables; per run the small files only, never
# checkpoints, encoders or event files):
#   runs/pretrain/busi_s0            -> busi_s0/     (128x128, 400 steps: the first pilot)
#   runs/pretrain/busi64_s{0,1,2}    -> busi64_s*/   (64x64, 1600 steps: the grid's recipe; curve and k-NN table)
#                                       pretrain_curves.png (their curves in one figure)
#   runs/busi_pretrained/{seg,cls}   -> seg/, cls/, runs/   (pilot 1's fine-tunes from busi_s0)
#   runs/busi_pretrained64/{seg,cls} -> grid64/            (fine-tunes from busi64_s{seed}, beside the BUSI grid's
#                                                            from-scratch runs of the same methods and seeds)
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
source results/copy_run_files.sh
out=results/pretrain
report() { OMP_NUM_THREADS=1 $PY Code/report.py --force "$@" > /dev/null; }
pretrain_files() {  # pretrain_files RUN DEST
  if [ -f "$1/encoder.pth" ]; then
    mkdir -p "$2"
    cp "$1/config.yaml" "$1/metrics.csv" "$2/"
    OMP_NUM_THREADS=1 $PY -m Code.reporting.scalars "$1/tensorboard" "$2/curve.csv" > /dev/null
  fi
}
pretrain_files runs/pretrain/busi_s0 $out/busi_s0
for s in 0 1 2; do pretrain_files runs/pretrain/busi64_s$s $out/busi64_s$s; done
curves=($out/busi64_s*/curve.csv)
if [ -f "${curves[0]}" ]; then   # the grid's pre-training curves: InfoNCE, embedding std, val k-NN
  OMP_NUM_THREADS=1 $PY Code/make_figures.py pretrain-curves --force "${curves[@]%/curve.csv}" --out $out/pretrain_curves.png \
      > /dev/null
fi

# pilot 1: each fine-tune beside the from-scratch run of the same method and seed
for task in seg cls; do
  if ls runs/busi_pretrained/$task/*/final_metrics.json >/dev/null 2>&1; then
    rm -rf "$out/$task" "$out/runs/$task"
    runs=()
    for done in runs/busi_pretrained/$task/*/final_metrics.json; do
      d=$(dirname "$done"); runs+=("$d")
      copy_run_files "$d" "$out/runs/$task/$(basename "$d")"
      if [ -f "runs/busi/$task/$(basename "$d")/final_metrics.json" ]; then runs+=("runs/busi/$task/$(basename "$d")"); fi
    done
    report "${runs[@]}" --out "$out/$task"
  fi
done

# the 64x64 grid: every finished fine-tune, the from-scratch run of the same method and seed (the BUSI grid's) and
# the from-scratch supervised run of that seed;
# report.md pairs Hermes with supervised from the same start, vs_scratch/report.md pairs every row with
# from-scratch supervised-only, vs_hermes_scratch/report.md with from-scratch Hermes
rm -rf $out/grid64
for task in seg cls; do
  if ls runs/busi_pretrained64/$task/*/final_metrics.json >/dev/null 2>&1; then
    runs=()
    for done in runs/busi_pretrained64/$task/*/final_metrics.json; do
      d=$(dirname "$done"); runs+=("$d")
      copy_run_files "$d" "$out/grid64/runs/$task/$(basename "$d")"
      for scratch in "runs/busi/$task/$(basename "$d")" "runs/busi/$task/supervised_n144_s${d##*_s}"; do
        if [ -f "$scratch/final_metrics.json" ] && [[ " ${runs[*]} " != *" $scratch "* ]]; then runs+=("$scratch"); fi
      done
    done
    report "${runs[@]}" --out "$out/grid64/$task" --per-seed model.encoder_weights
    report "${runs[@]}" --out "$out/grid64/$task/vs_scratch" --per-seed model.encoder_weights \
        --baseline "supervised (model.encoder_weights=None)"
    report "${runs[@]}" --out "$out/grid64/$task/vs_hermes_scratch" --per-seed model.encoder_weights \
        --baseline "hermes (model.encoder_weights=None)"
  fi
done
# the first draws of the seed-1 and seed-2 encoders were made on an earlier machine (pre-training is exact on one
# machine, not across CPUs); the runs from them that were re-run from the re-made encoders are kept in
# first_draw/runs/. The supervised-only table as it stood with the first draws, from the committed copies:
OMP_NUM_THREADS=1 $PY Code/make_figures.py pretrain-curves --force $out/busi64_s0 $out/first_draw/busi64_s{1,2} \
    --out $out/first_draw/pretrain_curves.png > /dev/null
keep_seg=$out/grid64/runs/seg/supervised_n144_s1   # seg seed 1 was not re-run (its Hermes run is from the first draw)
report $out/first_draw/runs/seg $out/grid64/runs/seg/supervised_n144_s0 $keep_seg results/busi/runs/seg/supervised_n144_s{0,1,2} \
    --out $out/first_draw/seg --per-seed model.encoder_weights --baseline "supervised (model.encoder_weights=None)"
report $out/first_draw/runs/cls $out/grid64/runs/cls/supervised_n144_s0 results/busi/runs/cls/supervised_n144_s{0,1,2} \
    --out $out/first_draw/cls --per-seed model.encoder_weights --baseline "supervised (model.encoder_weights=None)"
rm -rf $out/busi64_s0/seg $out/busi64_s0/cls $out/busi64_s0/runs   # pilot 2's fine-tunes now live in grid64/
