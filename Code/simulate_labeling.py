"""Does choosing which images to label pay? Simulate annotation rounds on a split whose pool carries its truth
(README "Label-efficiency simulation"; issue #24 part 2).

Usage::

    python Code/simulate_labeling.py --config configs/busi/cpu.yaml --data SPLIT --start 72 --k 24 --rounds 3 \\
        --strategies random entropy disagreement diverse --methods supervised hermes --out runs/label_sim \\
        [--seed S] [--iters N] [--set KEY=VALUE ...] [--suggest-with hermes] [--entry seg|cls] [--dry-run]

From budget ``--start`` of ``--data`` (``{draw}`` in it is replaced by ``--seed``, as in run_experiments.py
``--draws``), each strategy runs ``--rounds`` rounds of: suggest ``--k`` images from its own copy of the split
(``suggest.py``'s code, on the ``--suggest-with`` run's ``best.pt``; ``random`` needs no model), fill in their masks
and labels from the pool's own truth, ``data_split.py --add-labels``, train every method from scratch at the new
budget. Trainings per draw: methods × (1 + strategies × rounds). ``--seed`` is one draw (training seed, and the
strategies' seed); draws share ``--out``. Writes ``--out``/``rounds.csv`` (strategy, seed, round, labels, method,
run, train_seconds, suggest_seconds), ``runs/``, ``splits/``, ``rounds/`` (the suggestions and filled-in CSVs),
``sim.json`` and ``state.json``; ``make_figures.py label-curve OUT`` draws it. The same command resumes a stopped
simulation (Ctrl-C/SIGTERM let the running training save first); it never deletes anything. Code:
``Code/active/simulation.py`` (the rounds) and ``Code/active/sim_setup.py`` (checks, split copies).
"""
from __future__ import annotations

import _bootstrap  # noqa: F401

import argparse
from pathlib import Path
from typing import Optional, Sequence

from Code.active.strategies import STRATEGIES
from Code.errors import UserError, run_cli


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    from Code.methods import method_names

    parser = argparse.ArgumentParser(description="Simulate annotation rounds: the label-efficiency curve.")
    parser.add_argument("--config", required=True, help="config of every training (e.g. configs/busi/cpu.yaml)")
    parser.add_argument("--data", required=True, help="split folder whose pool carries its truth ({draw}: --seed)")
    parser.add_argument("--start", required=True, type=int, help="the start budget (an existing train/<N>/)")
    parser.add_argument("--k", required=True, type=int, help="images labeled per round")
    parser.add_argument("--rounds", required=True, type=int, help="rounds of --k images")
    parser.add_argument("--strategies", nargs="+", choices=STRATEGIES, default=list(STRATEGIES))
    parser.add_argument("--methods", nargs="+", default=["supervised", "hermes"],
                        help=f"methods trained at each budget ({', '.join(method_names())})")
    parser.add_argument("--out", default="runs/label_sim", help="the simulation folder (resumed when it exists)")
    parser.add_argument("--seed", type=int, default=0, help="the draw: training seed and strategies' seed")
    parser.add_argument("--iters", type=int, help="training iterations per run (default: the config's)")
    parser.add_argument("--set", nargs="+", action="extend", metavar="KEY=VALUE", help="config overrides of every run")
    parser.add_argument("--suggest-with", help="the method whose best.pt scores the pool (default: hermes if among "
                                               "--methods, else the first method)")
    parser.add_argument("--entry", choices=("seg", "cls"), default="seg", help="seg_train.py or cls_train.py")
    parser.add_argument("--dry-run", action="store_true", help="print the plan and commands, run nothing")
    args = parser.parse_args(argv)
    unknown = [m for m in args.methods if m not in method_names()]
    if unknown:
        raise UserError(f"unknown method(s) {', '.join(unknown)} (valid: {', '.join(method_names())})")
    args.strategies, args.methods = list(dict.fromkeys(args.strategies)), list(dict.fromkeys(args.methods))
    for flag in ("start", "k", "rounds", "iters"):
        if getattr(args, flag) is not None and getattr(args, flag) <= 0:
            raise UserError(f"--{flag} must be positive, got {getattr(args, flag)}")
    args.suggest_with = args.suggest_with or ("hermes" if "hermes" in args.methods else args.methods[0])
    if args.suggest_with not in args.methods:
        raise UserError(f"--suggest-with {args.suggest_with} is not among --methods {' '.join(args.methods)}: its "
                        "runs are the ones whose best.pt scores the pool")
    if not Path(args.config).is_file():
        raise UserError(f"config file not found: {args.config}")
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    from Code.active.sim_setup import check_source, open_out
    from Code.active.simulation import Simulation, Stopped, opening_line

    args = parse_args(argv)
    source = check_source(args.data, args.seed, args.start, args.k, args.rounds)
    print(opening_line(args, source), flush=True)
    if not args.dry_run:
        open_out(Path(args.out), vars(args), [(source, f"--data {source}"), (args.config, f"--config {args.config}")])
    try:
        Simulation(args, source).run()
    except Stopped as stop:
        print(f"{stop}; simulation stopped: run the same command again to continue", flush=True)
        return 130
    if not args.dry_run:
        print(f"done: {Path(args.out) / 'rounds.csv'} (draw with: python Code/make_figures.py label-curve "
              f"{args.out} --out FIG.png)")
    return 0


if __name__ == "__main__":
    run_cli(main)
