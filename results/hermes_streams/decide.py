"""Apply PROTOCOL.md's decision rule (val only) to the finished runs and write DECISION.md.

    python results/hermes_streams/decide.py RUNS REFERENCE [--out results/hermes_streams/DECISION.md]

RUNS: the folder holding ``copy_paste/``, ``feature_perturbation/`` and ``relative_threshold/`` (run.sh's
``runs/hermes_streams``);
REFERENCE: the sealed grid's Hermes seg runs (``runs/busi_sealed/seg``, only its ``hermes`` row is used).
Reads ``val_at_best`` only (Code/reporting/val_choice.py), never a test metric. Refuses until all nine candidate
runs have finished; an existing DECISION.md is never replaced (the decision is made once).
"""
import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from Code.errors import UserError, run_cli  # noqa: E402
from Code.reporting.val_choice import load_val_runs, paired_deltas, row_mean, rows_of  # noqa: E402

CANDIDATES = {"copy_paste": "A: `hermes.copy_paste=1.0`", "feature_perturbation": "B: `hermes.feature_perturbation=0.5`",
              "relative_threshold": "C: `ssl.class_ratio=relative`"}  # C: PROTOCOL_relative_threshold.md
MIN_MEAN_DICE, MIN_HIGHER, MIN_MEAN_AUC = 0.010, 2, -0.020  # PROTOCOL.md, "Decision rule (val only)"


def judge(candidate, reference):
    """(passes, mean ΔDice, draws with ΔDice > 0, mean ΔAUC, ΔDice per draw) of one candidate row."""
    dice, auc = paired_deltas(candidate, reference, "dice"), paired_deltas(candidate, reference, "auc")
    if len(dice) != 3:
        raise UserError(f"a candidate pairs with {len(dice)} reference draws, not 3")
    mean_dice, mean_auc = sum(dice.values()) / 3, sum(auc.values()) / 3
    higher = sum(d > 0 for d in dice.values())
    passes = mean_dice >= MIN_MEAN_DICE and higher >= MIN_HIGHER and mean_auc >= MIN_MEAN_AUC
    return passes, mean_dice, higher, mean_auc, dice


def hermes_row(rows, folder):
    """The single seg ``hermes…`` row of the runs loaded from ``folder``, with 3 finished draws."""
    found = {k: v for k, v in rows.items() if k[0] == "seg" and k[1].startswith("hermes")}
    if len(found) != 1 or len(next(iter(found.values()))) != 3:
        raise UserError(f"{folder}: needs one seg hermes row with 3 finished draws, found "
                        f"{ {k[1]: len(v) for k, v in found.items()} or 'none'}")
    return next(iter(found.values()))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs")
    parser.add_argument("reference")
    parser.add_argument("--out", default=str(ROOT / "results" / "hermes_streams" / "DECISION.md"))
    args = parser.parse_args(argv)
    out = Path(args.out)
    if out.exists():
        raise UserError(f"{out} exists: the decision is made once and never replaced")
    reference = hermes_row(rows_of(load_val_runs([args.reference])), args.reference)
    lines = ["# Decision on val (the rule of PROTOCOL.md and PROTOCOL_relative_threshold.md, applied by decide.py "
             "before any test number was read)", "",
             "Δ = candidate − sealed Hermes, val at each run's val-chosen step, points; rule: mean ΔDice ≥ +1.0, "
             "ΔDice > 0 in ≥ 2 of 3 draws, mean ΔAUC ≥ −2.0.", "",
             "| candidate | ΔDice per draw | mean ΔDice | draws higher | mean ΔAUC | val Dice (candidate / Hermes) | passes |",
             "|---|---|---|---|---|---|---|"]
    verdicts = {}
    for folder, name in CANDIDATES.items():
        path = str(Path(args.runs) / folder)
        row = hermes_row(rows_of(load_val_runs([path])), path)
        passes, mean_dice, higher, mean_auc, dice = judge(row, reference)
        verdicts[name] = (passes, mean_dice)
        lines.append(f"| {name} | {', '.join(f'{100 * d:+.2f}' for d in dice.values())} | {100 * mean_dice:+.2f} | "
                     f"{higher}/3 | {100 * mean_auc:+.2f} | {100 * row_mean(row, 'dice'):.2f} / "
                     f"{100 * row_mean(reference, 'dice'):.2f} | {'yes' if passes else 'no'} |")
    passing = [n for n, (p, _) in verdicts.items() if p]
    adopted = max(passing, key=lambda n: verdicts[n][1]) if passing else None
    lines += ["", f"**Adopted:** {adopted} (reported as its own row; `--method hermes` keeps the paper's default)."
              if adopted else "**Adopted:** none. Neither stream helped Hermes on val by the rule; Hermes stays as "
              "it is."]
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    run_cli(main)
