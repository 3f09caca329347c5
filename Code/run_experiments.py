"""Run a grid of trainings (methods × label budgets × seeds) one after the other, resumably.

Usage::

    python Code/run_experiments.py --config FILE --labels N [N ...] [--methods supervised fixmatch hermes]
        [--seeds 0 1 2] [--entry seg|cls] [--data SPLIT] [--out runs/experiments] [--iters K]
        [--set key=value ...] [--dry-run]

Each run is a subprocess ``python Code/<entry>_train.py --config FILE --method M --labels N --seed S --out RUN``
with RUN = ``<out>/<method>_n<N>_s<seed>``. A run whose folder holds ``final_metrics.json`` is finished and
skipped; a run whose folder exists without it was interrupted and is continued with ``--resume auto``. A failed
run does not stop the grid; the exit status is 1 if any run failed. ``--dry-run`` prints the plan and commands.
"""
from __future__ import annotations

import _bootstrap  # noqa: F401

import argparse
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import List, Optional, Sequence

from Code.engine.config import METHODS
from Code.errors import UserError, run_cli

CODE_DIR = Path(__file__).resolve().parent
ENTRIES = {"seg": CODE_DIR / "seg_train.py", "cls": CODE_DIR / "cls_train.py"}


def run_dir(out: Path, method: str, labels: int, seed: int) -> Path:
    """The folder of one run: ``<out>/<method>_n<labels>_s<seed>``."""
    return out / f"{method}_n{labels}_s{seed}"


def run_state(folder: Path) -> str:
    """``done`` (``final_metrics.json`` present), ``resume`` (folder exists and is not empty) or ``new``."""
    if (folder / "final_metrics.json").is_file():
        return "done"
    if folder.is_dir() and any(folder.iterdir()):
        return "resume"
    return "new"


def build_command(args: argparse.Namespace, method: str, labels: int, seed: int, folder: Path,
                  resume: bool) -> List[str]:
    """The argument list of one training subprocess."""
    cmd = [sys.executable, str(ENTRIES[args.entry]), "--config", args.config, "--method", method,
           "--labels", str(labels), "--seed", str(seed), "--out", str(folder)]
    if args.data:
        cmd += ["--data", args.data]
    if args.iters is not None:
        cmd += ["--iters", str(args.iters)]
    if args.set:
        cmd += ["--set", *args.set]  # the entry scripts take one --set with several KEY=VALUE items
    if resume:
        cmd += ["--resume", "auto"]
    return cmd


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Train a grid of methods × label budgets × seeds, resumably.")
    parser.add_argument("--config", required=True, help="config file passed to every run")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), help=f"methods ({', '.join(METHODS)})")
    parser.add_argument("--labels", nargs="+", type=int, required=True, help="label budgets N")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--entry", choices=sorted(ENTRIES), default="seg", help="seg_train.py or cls_train.py")
    parser.add_argument("--data", help="split folder (default: the config's data.split)")
    parser.add_argument("--out", default="runs/experiments", help="parent folder of the run folders")
    parser.add_argument("--iters", type=int, help="training iterations per run (default: the config's)")
    parser.add_argument("--set", nargs="+", action="extend", metavar="KEY=VALUE",
                        help="config overrides passed to every run (several items, or the flag repeated)")
    parser.add_argument("--dry-run", action="store_true", help="print the plan and commands, run nothing")
    args = parser.parse_args(argv)
    unknown = [m for m in args.methods if m not in METHODS]
    if unknown:
        raise UserError(f"unknown method(s) {', '.join(unknown)} (valid: {', '.join(METHODS)})")
    if not Path(args.config).is_file():
        raise UserError(f"config file not found: {args.config}")
    if args.data and not Path(args.data).is_dir():
        raise UserError(f"data split folder not found: {args.data}")
    if any(n <= 0 for n in args.labels) or (args.iters is not None and args.iters <= 0):
        raise UserError("--labels and --iters must be positive")
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    grid = [(m, n, s) for m in args.methods for n in args.labels for s in args.seeds]
    failed: List[str] = []
    counts = {"done": 0, "ran": 0}
    for index, (method, labels, seed) in enumerate(grid, 1):
        folder = run_dir(out, method, labels, seed)
        state = run_state(folder)
        prefix = f"[{index}/{len(grid)}] {folder.name}:"
        if state == "done":
            print(f"{prefix} skip (finished)", flush=True)
            counts["done"] += 1
            continue
        cmd = build_command(args, method, labels, seed, folder, resume=state == "resume")
        action = "resume" if state == "resume" else "run"
        if args.dry_run:
            print(f"{prefix} would {action}: {shlex.join(cmd)}", flush=True)
            continue
        print(f"{prefix} {action}: {shlex.join(cmd)}", flush=True)
        start = time.monotonic()
        code = subprocess.call(cmd)
        took = time.monotonic() - start
        if code == 0:
            counts["ran"] += 1
            print(f"{prefix} ok ({took:.0f} s)", flush=True)
        else:
            failed.append(folder.name)
            print(f"{prefix} FAILED (exit {code}, {took:.0f} s)", flush=True)
    print(f"grid of {len(grid)} runs: {counts['done']} already finished, {counts['ran']} ran, "
          f"{len(failed)} failed{': ' + ', '.join(failed) if failed else ''}"
          f"{' (dry run: nothing was run)' if args.dry_run else ''}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    run_cli(main)
