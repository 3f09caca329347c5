#!/usr/bin/env bash
# Refresh results/hermes_streams/ from the runs of PROTOCOL.md: each finished run's small files (never checkpoints
# or event files), the val comparisons (val_<candidate>.md; no test number), the decision once all nine runs have finished
# (decide.py writes DECISION.md, once), and only after DECISION.md exists the test tables (report.py, paired
# intervals against the sealed Hermes runs and against supervised-only).
#   RUNS: the candidates' run folders (default runs/hermes_streams); SEALED: the sealed grid (default runs/busi_sealed)
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
RUNS=${RUNS:-runs/hermes_streams}
SEALED=${SEALED:-runs/busi_sealed}
export OMP_NUM_THREADS=1
source results/copy_run_files.sh
out=results/hermes_streams
rm -rf "$out/runs"
for done in $(find "$RUNS" -name final_metrics.json 2>/dev/null | sort); do
  run=$(dirname "$done")
  copy_run_files "$run" "$out/runs/${run#$RUNS/}"
done
finished=$(find "$RUNS" -name final_metrics.json 2>/dev/null | wc -l)
[ "$finished" -gt 0 ] || { echo "$RUNS: no finished run yet"; exit 0; }
refs=("$SEALED"/seg/supervised_n144_s{0,1,2} "$SEALED"/seg/hermes_n144_s{0,1,2})
# One comparison per candidate, so that its runs and the sealed Hermes runs differ in one key: report.py and
# val_compare.py then name the two rows "hermes (KEY=candidate value)" and "hermes (KEY=default)".
declare -A default=([copy_paste]="hermes.copy_paste=0.0" [feature_perturbation]="hermes.feature_perturbation=0.0"
                    [relative_threshold]="ssl.class_ratio=batch")
for name in copy_paste feature_perturbation relative_threshold; do
  [ -n "$(find "$RUNS/$name" -name final_metrics.json 2>/dev/null)" ] || continue
  $PY Code/val_compare.py "${refs[@]}" "$RUNS/$name" --baseline "hermes (${default[$name]})" \
    --metrics dice auc accuracy balanced_accuracy --out "$out/val_$name.md" --force > /dev/null
  echo "val comparison of $name in $out/val_$name.md"
done
if [ "$finished" -eq 9 ] && [ ! -f "$out/DECISION.md" ]; then
  $PY results/hermes_streams/decide.py "$RUNS" "$SEALED/seg" --out "$out/DECISION.md"
fi
if [ -f "$out/DECISION.md" ]; then  # the decision is on record: test may be read now, once
  for name in copy_paste feature_perturbation relative_threshold; do
    [ -d "$RUNS/$name" ] || continue
    $PY Code/report.py --force "${refs[@]}" "$RUNS/$name" --baseline "hermes (${default[$name]})" \
      --out "$out/test_$name" > /dev/null
    $PY Code/report.py --force "${refs[@]}" "$RUNS/$name" --out "$out/test_${name}_vs_supervised" > /dev/null
    echo "test tables of $name against the sealed Hermes ($out/test_$name/) and supervised-only (…_vs_supervised/)"
  done
fi
