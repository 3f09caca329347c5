#!/usr/bin/env bash
# PLAN.md's simulation on two cores, resumable (simulate_labeling.py resumes its folder). One simulation folder
# per draw, so that two processes never share a state.json: runs/label_sim/d<s>.
#   bash results/label_sim/run.sh 0        draw 0: all four strategies (3 rounds), then random to 5 rounds (30 runs)
#   bash results/label_sim/run.sh 1        draws 1 and 2: random, 5 rounds each (24 runs)
#   bash results/label_sim/run.sh best S STRATEGY   draw S (1 or 2): the best strategy of draw 0, 3 rounds (6 runs),
#                                          STRATEGY chosen on val as PLAN.md says (choose_best.py), never on test
#   RUNS (default runs/label_sim), SPLITS (default splits); one thread per run
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
RUNS=${RUNS:-runs/label_sim}
SPLITS=${SPLITS:-splits}
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
sim() {  # sim DRAW ROUNDS STRATEGY...
  local s=$1 rounds=$2; shift 2
  $PY Code/simulate_labeling.py --config configs/busi/cpu.yaml --data "$SPLITS/busi_d{draw}" --seed "$s" \
    --start 72 --k 24 --rounds "$rounds" --strategies "$@" --methods supervised hermes --out "$RUNS/d$s"
}
case "${1:?usage: run.sh 0|1|best S STRATEGY}" in
  0) sim 0 3 random entropy disagreement diverse && sim 0 5 random ;;
  1) sim 1 5 random && sim 2 5 random ;;
  best) sim "${2:?draw}" 3 "${3:?strategy}" ;;
  *) echo "run.sh: the first argument is 0, 1 or best, got '$1'" >&2; exit 2 ;;
esac
