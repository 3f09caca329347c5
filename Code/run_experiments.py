"""Run a grid of trainings (methods × label budgets × seeds) one after the other, resumably.

Usage::

    python Code/run_experiments.py --config FILE --labels N [N ...] [--methods supervised fixmatch hermes]
        [--seeds 0 1 2 | --draws 0 1 2 --data SPLIT_{draw}] [--entry seg|cls] [--data SPLIT] [--out runs/experiments]
        [--iters K] [--set key=value ...] [--dry-run]

Each run is a subprocess ``python Code/<entry>_train.py --config FILE --method M --labels N --seed S --out RUN``
with RUN = ``<out>/<method>_n<N>_s<seed>``. Each run folder's ``config.yaml`` is compared with the config the
command resolves: the same config with ``final_metrics.json`` is finished and skipped, without it interrupted and
continued with ``--resume auto``; a change of ``train.iters`` only extends the run (the entry's rule); any other
change is not run and counted as failed, so that a report never shows results of an older config as current. A failed
run does not stop the grid; the exit status is 1 if any run failed. ``--dry-run`` prints the plan and commands.
``--draws 0 1 2`` (instead of ``--seeds``) trains over labeled draws: the run of draw s uses seed s and the split
folder ``--data`` with ``{draw}`` replaced by s (made by ``data_split.py --draw-seed s``); before anything runs, each
draw's ``split.json`` must record ``draw_seed`` s and all draws must share the same test and val lists (one-line
error otherwise). Run folders keep ``<method>_n<N>_s<seed>`` (seed = draw), so report.py pairs them by seed.
Ctrl-C (SIGINT) or SIGTERM stops the grid cleanly: the running training is asked to save ``latest.pt`` after its
current step (it gets SIGTERM) and the grid waits for it, then exits with 130; the same command continues.
"""
from __future__ import annotations

import _bootstrap  # noqa: F401

import argparse
import json
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from Code.engine.reconcile import listed
from Code.errors import UserError, run_cli
from Code.methods import method_names

CODE_DIR = Path(__file__).resolve().parent
ENTRIES = {"seg": CODE_DIR / "seg_train.py", "cls": CODE_DIR / "cls_train.py"}
DRAW = "{draw}"  # placeholder in --data under --draws


def split_for(args: argparse.Namespace, seed: int) -> Optional[str]:
    """The split folder of the runs with ``seed``: ``--data``, with ``{draw}`` replaced by the seed under ``--draws``."""
    return args.data.replace(DRAW, str(seed)) if args.data and args.draws else args.data


def _held_out_lists(folder: Path) -> Tuple[str, str]:
    return tuple((folder / part / "labeled.txt").read_text(encoding="utf-8")
                 if (folder / part / "labeled.txt").is_file() else "" for part in ("test", "val"))


def check_draws(args: argparse.Namespace) -> None:
    """``--draws``: every draw's split folder exists, its split.json records ``draw_seed`` = the draw, and all draws
    share the first one's test and val lists; UserError naming the folder(s) otherwise."""
    if not args.data or DRAW not in args.data:
        raise UserError(f"--draws needs --data with {DRAW} in it (e.g. --data splits/busi_d{DRAW}), the split folder "
                        f"of each draw")
    first = None
    for draw in args.draws:
        folder = Path(split_for(args, draw))
        record_file = folder / "split.json"
        if not record_file.is_file():
            raise UserError(f"--draws {draw}: {record_file} not found (make it with data_split.py --draw-seed {draw})")
        recorded = json.loads(record_file.read_text(encoding="utf-8")).get("draw_seed")
        if recorded != draw:
            raise UserError(f"--draws {draw}: {record_file} records draw_seed {recorded}, not {draw}")
        lists = _held_out_lists(folder)
        if first is None:
            first = (folder, lists)
        elif lists != first[1]:
            raise UserError(f"--draws: {folder} and {first[0]} have different test or val lists (made with another "
                            f"--seed, --test-ratio or --val-ratio?); draws must share them")


def run_dir(out: Path, method: str, labels: int, seed: int) -> Path:
    """The folder of one run: ``<out>/<method>_n<labels>_s<seed>``."""
    return out / f"{method}_n{labels}_s{seed}"


def wanted_config(args: argparse.Namespace, cmd: Sequence[str]) -> Dict[str, Any]:
    """The config the entry script resolves from ``cmd`` (its argument list, interpreter and script first)."""
    from Code.engine.cli import build_parser, resolve_config

    return resolve_config(build_parser(args.entry).parse_args(list(cmd[2:])), args.entry)


def run_state(folder: Path, wanted: Dict[str, Any]) -> Tuple[str, List[str]]:
    """``(state, differing keys)`` of a run folder against the config a run would now get:
    ``new`` (missing or empty), ``done`` (same config, ``final_metrics.json`` present), ``resume`` (same config,
    unfinished), ``extend`` (only ``train.iters`` differs: the entry extends it), ``changed`` (other keys differ, or
    a non-empty folder that is not a run): not run, so that no stale result is reported as current."""
    from Code.engine.run_folder import differences, read_saved_config

    if not folder.is_dir() or not any(folder.iterdir()):
        return "new", []
    saved = read_saved_config(folder)
    if saved is None:
        return "changed", ["(no config.yaml of a run)"]
    diff = [k for k in differences(saved, wanted) if k != "device"]
    if not diff:
        return ("done" if (folder / "final_metrics.json").is_file() else "resume"), []
    return ("extend" if diff == ["train.iters"] else "changed"), diff


def build_command(args: argparse.Namespace, method: str, labels: int, seed: int, folder: Path,
                  resume: bool) -> List[str]:
    """The argument list of one training subprocess."""
    cmd = [sys.executable, str(ENTRIES[args.entry]), "--config", args.config, "--method", method,
           "--labels", str(labels), "--seed", str(seed), "--out", str(folder)]
    if args.data:
        cmd += ["--data", split_for(args, seed)]
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
    names = method_names()
    parser.add_argument("--methods", nargs="+", default=list(names), help=f"methods ({', '.join(names)})")
    parser.add_argument("--labels", nargs="+", type=int, required=True, help="label budgets N")
    runs = parser.add_mutually_exclusive_group()
    runs.add_argument("--seeds", nargs="+", type=int, default=None, help="seeds (default 0 1 2)")
    runs.add_argument("--draws", nargs="+", type=int, default=None,
                      help=f"labeled draws: draw s runs with seed s on --data with {DRAW} replaced by s")
    parser.add_argument("--entry", choices=sorted(ENTRIES), default="seg", help="seg_train.py or cls_train.py")
    parser.add_argument("--data", help="split folder (default: the config's data.split)")
    parser.add_argument("--out", default="runs/experiments", help="parent folder of the run folders")
    parser.add_argument("--iters", type=int, help="training iterations per run (default: the config's)")
    parser.add_argument("--set", nargs="+", action="extend", metavar="KEY=VALUE",
                        help="config overrides passed to every run (several items, or the flag repeated)")
    parser.add_argument("--dry-run", action="store_true", help="print the plan and commands, run nothing")
    args = parser.parse_args(argv)
    unknown = [m for m in args.methods if m not in method_names()]
    if unknown:
        raise UserError(f"unknown method(s) {', '.join(unknown)} (valid: {', '.join(method_names())})")
    if not Path(args.config).is_file():
        raise UserError(f"config file not found: {args.config}")
    if args.draws:
        check_draws(args)
    elif args.data and not Path(args.data).is_dir():
        raise UserError(f"data split folder not found: {args.data}")
    args.seeds = args.draws or args.seeds or [0, 1, 2]
    if any(n <= 0 for n in args.labels) or (args.iters is not None and args.iters <= 0):
        raise UserError("--labels and --iters must be positive")
    return args


def run_child(cmd: Sequence[str]) -> Tuple[int, Optional[int]]:
    """Run one training; ``(exit code, stopping signal or None)``. SIGINT / SIGTERM are passed on to the training
    as SIGTERM (save ``latest.pt`` after this step, then stop) and waited for, never turned into a kill: Python's
    ``subprocess.call`` would SIGKILL the child on Ctrl-C and lose the steps since its last checkpoint. A terminal's
    Ctrl-C reaches the training directly as well; the extra SIGTERM asks for the same stop."""
    proc = subprocess.Popen(cmd)
    stop: List[int] = []

    def forward(signum, _frame):
        stop.append(signum)
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        code = proc.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return code, (stop[0] if stop else None)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    grid = [(m, n, s) for m in args.methods for n in args.labels for s in args.seeds]
    failed: List[str] = []
    counts = {"done": 0, "ran": 0}
    for index, (method, labels, seed) in enumerate(grid, 1):
        folder = run_dir(out, method, labels, seed)
        plain = build_command(args, method, labels, seed, folder, resume=False)
        state, diff = run_state(folder, wanted_config(args, plain))
        prefix = f"[{index}/{len(grid)}] {folder.name}:"
        if state == "done":
            print(f"{prefix} skip (finished)", flush=True)
            counts["done"] += 1
            continue
        if state == "changed":
            print(f"{prefix} NOT RUN: the folder holds a run with another config (differs in: {listed(diff)}); "
                  "remove it or choose another --out", flush=True)
            failed.append(folder.name)
            continue
        cmd = build_command(args, method, labels, seed, folder, resume=state == "resume")
        action = {"resume": "resume", "extend": "extend", "new": "run"}[state]
        if args.dry_run:
            print(f"{prefix} would {action}: {shlex.join(cmd)}", flush=True)
            continue
        print(f"{prefix} {action}: {shlex.join(cmd)}", flush=True)
        start = time.monotonic()
        code, stopped_by = run_child(cmd)
        took = time.monotonic() - start
        if stopped_by is not None:
            print(f"{prefix} stopped by {signal.Signals(stopped_by).name} (exit {code}, {took:.0f} s); grid stopped: "
                  "run the same command again to continue", flush=True)
            return 130
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
