"""The label-efficiency simulation (issue #24 part 2; README "Label-efficiency simulation"): rounds of
suggest → annotate → ``--add-labels`` → retrain, with the pool's own truth standing in for the annotator.

For draw ``seed``, budgets L_r = start + r·k (r = 0 … R). Round r ≥ 1 of strategy s:

1. suggest k images from the pool of budget L_{r-1} of s's own split copy (``sim_setup.copy_split``): ``random``
   from the seed alone (``strategies.select``, as ``suggest.py --strategy random``; no model), the others with
   ``suggest.py``'s code (its ``main``, in-process) on ``checkpoints/best.pt`` of the ``--suggest-with`` run at
   L_{r-1}; written to ``rounds/<s>_s<seed>/r<r>/to_label.csv``; strategy seed = 1000·seed + r;
2. :func:`annotate` fills ``mask``/``label`` from the pool's ``truth.txt`` (``labels.csv``, masks by absolute path);
3. ``add_labels`` makes budget L_r of the copy;
4. every method is trained at L_r from scratch (``run_experiments``' command, state check and signal handling).

Budget L_0 is trained once per method and draw, on the source split, in ``runs/start/`` (shared by the strategies:
their round-0 rows name the same run). Other runs: ``runs/<s>/<method>_n<L>_s<seed>``. Resume: a finished run is
skipped, an unfinished one continued (``--resume auto``), a round whose budget exists in the copy is not redone,
a stopped suggestion is redone. ``state.json`` keeps the seconds; ``rounds.csv`` (:data:`COLUMNS`) one row per
finished run, rewritten after each step. Test is read only by the trainers' sealed test (``final_metrics.json``);
the suggestion reads the pool only.
"""
from __future__ import annotations

import argparse
import csv
import importlib
import json
import shlex
import signal
import sys
import time
from pathlib import Path

from Code.errors import UserError
from Code.outputs import write_atomically

CODE_DIR = Path(__file__).resolve().parents[1]
COLUMNS = ("strategy", "seed", "round", "labels", "method", "run", "train_seconds", "suggest_seconds")


class Stopped(Exception):
    """A training was stopped by SIGINT/SIGTERM (it saved ``latest.pt``); the same command continues."""


def suggest_module():
    """``Code/suggest.py`` as a module (its folder holds ``_bootstrap``, which it imports)."""
    added = str(CODE_DIR) not in sys.path
    if added:
        sys.path.insert(0, str(CODE_DIR))
    try:
        return importlib.import_module("suggest")
    finally:
        if added:
            sys.path.remove(str(CODE_DIR))


def run_folder(out: Path, strategy: str, method: str, labels: int, seed: int, start: int) -> Path:
    from Code.run_experiments import run_dir

    return run_dir(out / "runs" / ("start" if labels == start else strategy), method, labels, seed)


def annotate(to_label: Path, pool: Path, filled: Path) -> int:
    """The simulated annotator: ``to_label.csv`` with ``mask`` (absolute path of the pool's truth mask) and
    ``label`` filled from ``pool/truth.txt``, written to ``filled``; returns the number of rows."""
    from Code.data.lists import read_labeled_list

    truth = {image: (mask, label) for image, mask, label in read_labeled_list(pool / "truth.txt", allow_empty=True)}
    with to_label.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        rows, fields = list(reader), list(reader.fieldnames or [])
    for row in rows:
        if row["image"] not in truth:
            raise UserError(f"the simulation needs the pool's truth: {row['image']} of {to_label} is not in "
                            f"{pool / 'truth.txt'}")
        mask, label = truth[row["image"]]
        row["mask"], row["label"] = str((pool / "mask" / mask).resolve()), str(label)
    with filled.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    return len(rows)


class Simulation:
    """One draw of the simulation (module docstring); ``args`` are simulate_labeling.py's."""

    def __init__(self, args: argparse.Namespace, source: Path):
        self.args, self.source, self.out = args, source, Path(args.out)
        self.state_file = self.out / "state.json"
        saved = json.loads(self.state_file.read_text(encoding="utf-8")) if self.state_file.is_file() else {}
        self.state = {key: saved.get(key, {}) for key in ("train_seconds", "suggest_seconds", "rows")}

    # ---------------------------------------------------------------------------------------------- records
    def save(self) -> None:
        if self.args.dry_run:
            return
        text = json.dumps(self.state, indent=1, sort_keys=True) + "\n"
        write_atomically(self.state_file, lambda tmp: tmp.write_text(text, encoding="utf-8"))
        rows = sorted(self.state["rows"].values(), key=lambda r: (r["strategy"], r["seed"], r["round"], r["method"]))

        def write(tmp: Path) -> None:
            with tmp.open("w", newline="", encoding="utf-8") as handle:
                writer = csv.DictWriter(handle, fieldnames=COLUMNS)
                writer.writeheader()
                writer.writerows(rows)
        write_atomically(self.out / "rounds.csv", write)

    def record(self, strategy: str, r: int, method: str, folder: Path) -> None:
        seed, rel = self.args.seed, folder.relative_to(self.out).as_posix()
        self.state["rows"][f"{strategy}|{seed}|{r}|{method}"] = {
            "strategy": strategy, "seed": seed, "round": r, "labels": self.args.start + r * self.args.k,
            "method": method, "run": rel, "train_seconds": self.state["train_seconds"].get(rel, ""),
            "suggest_seconds": self.state["suggest_seconds"].get(f"{strategy}_s{seed}/r{r}", "") if r else ""}
        self.save()

    # ---------------------------------------------------------------------------------------------- steps
    def train(self, method: str, labels: int, data: Path, folder: Path) -> bool:
        """Train (or continue) one run; True when it is finished. Stopped on a signal, UserError on a failure."""
        from Code.engine.reconcile import listed
        from Code.run_experiments import build_command, run_child, run_state, wanted_config

        a = self.args
        spec = argparse.Namespace(entry=a.entry, config=a.config, data=str(data), draws=None, iters=a.iters, set=a.set)
        state, diff = run_state(folder, wanted_config(spec, build_command(spec, method, labels, a.seed, folder, False)))
        if state == "done":
            print(f"{folder}: skip (finished)", flush=True)
            return True
        if state == "changed":
            raise UserError(f"{folder} holds a run with another config (differs in: {listed(diff)}); the simulation "
                            "never replaces it: choose another --out")
        cmd = build_command(spec, method, labels, a.seed, folder, resume=state == "resume")
        print(f"{folder}: {'would ' if a.dry_run else ''}{state if state != 'new' else 'run'}: {shlex.join(cmd)}",
              flush=True)
        if a.dry_run:
            return False
        began = time.monotonic()
        code, stopped_by = run_child(cmd)
        rel = folder.relative_to(self.out).as_posix()
        self.state["train_seconds"][rel] = round(self.state["train_seconds"].get(rel, 0) + time.monotonic() - began, 1)
        self.save()
        if stopped_by is not None:
            raise Stopped(f"{folder}: stopped by {signal.Signals(stopped_by).name}")
        if code != 0:
            raise UserError(f"training {folder} failed (exit {code}); the simulation stopped: run the same command "
                            "again to continue")
        return True

    def suggest(self, strategy: str, r: int, split: Path, labels: int, folder: Path) -> Path:
        """Write ``folder/to_label.csv``: the k images of ``strategy`` from the pool of budget ``labels``."""
        import numpy as np

        from Code.active.strategies import PARTS, select

        module, a = suggest_module(), self.args
        seed = 1000 * a.seed + r
        if strategy != "random":
            checkpoint = run_folder(self.out, strategy, a.suggest_with, labels, a.seed, a.start) / "checkpoints" / \
                "best.pt"
            module.main(["--checkpoint", str(checkpoint), "--data", str(split), "--labels", str(labels), "--k",
                         str(a.k), "--out", str(folder), "--strategy", strategy, "--seed", str(seed), "--force"])
            return folder / "to_label.csv"
        paths = module.read_pool(split, labels)
        parts = {name: np.zeros(len(paths)) for name in PARTS}
        chosen, scores, _ = select("random", parts, None, a.k, seed)
        rows = [dict(row, **{name: "" for name in PARTS}) for row in module.csv_rows(paths, chosen, scores, parts, {})]
        folder.mkdir(parents=True, exist_ok=True)
        with (folder / "to_label.csv").open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=module.CSV_COLUMNS)
            writer.writeheader()
            writer.writerows(rows)  # no model: the score parts stay empty
        return folder / "to_label.csv"

    def label_round(self, strategy: str, r: int) -> Path:
        """Make budget L_r of ``strategy``'s split copy (module docstring, steps 1-3) unless it exists."""
        from Code.active.sim_setup import copy_split
        from Code.DataProcess.add_labels import add_labels

        a = self.args
        split = self.out / "splits" / f"{strategy}_s{a.seed}"
        before, after = a.start + (r - 1) * a.k, a.start + r * a.k
        if a.dry_run:
            print(f"{split}: would suggest {a.k} images ({strategy}) from the pool of budget {before} and add them "
                  f"as budget {after}", flush=True)
            return split
        how = copy_split(self.source, a.start, split)
        if how != "kept":
            print(f"{split}: test, val and train/{a.start} of {self.source} ({how})", flush=True)
        if (split / "train" / str(after) / "labeled" / "labeled.txt").is_file():
            return split
        folder = self.out / "rounds" / f"{strategy}_s{a.seed}" / f"r{r}"
        began = time.monotonic()
        to_label = self.suggest(strategy, r, split, before, folder)
        self.state["suggest_seconds"][f"{strategy}_s{a.seed}/r{r}"] = round(time.monotonic() - began, 2)
        annotate(to_label, split / "train" / str(before) / "unlabeled", folder / "labels.csv")
        add_labels(split, before, folder / "labels.csv")
        self.save()
        print(f"{split}: budget {after} ({strategy}: {a.k} images from the pool of budget {before})", flush=True)
        return split

    # ---------------------------------------------------------------------------------------------- the loop
    def run(self) -> None:
        """Round-major: every strategy reaches budget L_r before any reaches L_{r+1}, so a stopped simulation has
        comparable curves so far."""
        a, planned = self.args, set()
        for r in range(a.rounds + 1):
            labels = a.start + r * a.k
            for strategy in a.strategies:
                split = self.source if r == 0 else self.label_round(strategy, r)
                for method in a.methods:
                    folder = run_folder(self.out, strategy, method, labels, a.seed, a.start)
                    if a.dry_run and folder in planned:  # a shared start run: planned once
                        continue
                    planned.add(folder)
                    if self.train(method, labels, split, folder):
                        self.record(strategy, r, method, folder)


def planned_runs(methods: int, strategies: int, rounds: int) -> int:
    """Trainings per draw: methods × (1 + strategies × rounds) (the start budget is shared by the strategies)."""
    return methods * (1 + strategies * rounds)


def opening_line(args: argparse.Namespace, source: Path) -> str:
    last = args.start + args.rounds * args.k
    runs = planned_runs(len(args.methods), len(args.strategies), args.rounds)
    return (f"label simulation, draw {args.seed} on {source}: budgets {args.start} to {last} by {args.k}, strategies "
            f"{' '.join(args.strategies)}, methods {' '.join(args.methods)} ({runs} trainings), suggestions by "
            f"{args.suggest_with}; out {args.out}")
