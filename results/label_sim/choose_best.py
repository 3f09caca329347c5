"""PLAN.md's choice of the best strategy, on val only: among entropy, disagreement and diverse, the one whose Hermes
run at 144 labels in draw 0 has the highest val Dice at its val-chosen step (``val_at_best``); ties by the mean
val Dice of its Hermes runs over budgets 96–144. Prints the table and the choice; reads no test metric.

    python results/label_sim/choose_best.py runs/label_sim/d0
"""
import json
import sys
from pathlib import Path

STRATEGIES = ("entropy", "disagreement", "diverse")
BUDGETS = (96, 120, 144)


def val_dice(run: Path) -> float:
    record = run / "final_metrics.json"
    if not record.is_file():
        sys.exit(f"choose_best.py: {run} has not finished (no final_metrics.json); choose once all have")
    value = json.loads(record.read_text()).get("val_at_best")
    if not isinstance(value, dict):
        sys.exit(f"choose_best.py: {record} has no val_at_best")
    return float(value["dice"])


def main(sim: str) -> str:
    scores = {}
    for strategy in STRATEGIES:
        per_budget = [val_dice(Path(sim) / "runs" / strategy / f"hermes_n{n}_s0") for n in BUDGETS]
        scores[strategy] = (per_budget[-1], sum(per_budget) / len(per_budget))
        print(f"{strategy}: val Dice at 144 {100 * scores[strategy][0]:.2f}, mean over 96–144 "
              f"{100 * scores[strategy][1]:.2f}")
    best = max(STRATEGIES, key=lambda s: scores[s])
    print(f"best strategy (val): {best}")
    return best


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python results/label_sim/choose_best.py SIM_FOLDER_OF_DRAW_0")
    main(sys.argv[1])
