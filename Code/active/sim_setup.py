"""Checks and folders of the label-efficiency simulation (``simulate_labeling.py``; README "Label-efficiency
simulation"): everything that can be refused is refused here, before any training starts.

- :func:`check_source`: the split of draw ``seed`` (``--data``, ``{draw}`` replaced by the seed) holds the start
  budget, its unlabeled pool carries its truth (``train/<start>/unlabeled/truth.txt`` and ``mask/``, for every pool
  image: the pool's own masks and labels stand in for the annotator) and is large enough for ``rounds × k`` images;
- :func:`open_out`: the simulation folder is new, or an earlier simulation's (marker ``simulate_labeling.py``)
  with the same fixed settings (``sim.json``), which then resumes; anything else is refused;
- :func:`copy_split`: each strategy's own copy of the split, ``<out>/splits/<strategy>_s<seed>/``, so that the
  ``--add-labels`` rounds of one strategy are never seen by another. It holds ``split.json`` (a copy, with the
  counts and rounds of the budgets it does not hold dropped and ``simulation_copy`` = source and budget added), the
  source's marker file if it has one, and ``test/``, ``val/`` and ``train/<start>/`` as **hard links** of the
  source's files (same inode, so byte-identical by construction and free of disk space; where the file system
  refuses hard links, byte copies). Nothing in a split is ever rewritten in place (``--add-labels`` writes new
  budget folders and replaces ``split.json`` by a rename), so the links never change the source.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Dict, List

from Code.errors import UserError
from Code.outputs import MARKER, read_marker, refuse_protected, write_atomically, write_marker

SCRIPT = "simulate_labeling.py"
DRAW = "{draw}"
FIXED = ("config", "data", "start", "k", "entry", "iters", "set", "suggest_with")  # a resume must keep these


def split_of(data: str, seed: int) -> Path:
    """The split folder of draw ``seed``: ``--data`` with ``{draw}`` replaced by the seed."""
    return Path(data.replace(DRAW, str(seed)))


def _budgets(split: Path) -> str:
    return ", ".join(sorted((p.name for p in (split / "train").glob("*") if p.name.isdigit()), key=int)) or "none"


def _truth_names(pool: Path) -> List[str]:
    from Code.data.lists import read_labeled_list

    truth = pool / "truth.txt"
    if not truth.is_file() or not (pool / "mask").is_dir():
        raise UserError(f"the simulation needs the pool's truth (its masks and labels stand in for the annotator): "
                        f"{truth} or {pool / 'mask'} not found; make the split with data_split.py from data with masks")
    return [entry[0] for entry in read_labeled_list(truth, allow_empty=True)]


def check_source(data: str, seed: int, start: int, k: int, rounds: int) -> Path:
    """The checked split folder of draw ``seed`` (module docstring); UserError naming what is missing."""
    from Code.data.lists import read_unlabeled_list

    split = split_of(data, seed)
    record_file = split / "split.json"
    if not record_file.is_file():
        raise UserError(f"--data {split}: no split.json (not a split made by data_split.py)")
    if DRAW in data:
        recorded = json.loads(record_file.read_text(encoding="utf-8")).get("draw_seed")
        if recorded != seed:
            raise UserError(f"--seed {seed}: {record_file} records draw_seed {recorded}, not {seed}")
    if not (split / "train" / str(start) / "labeled" / "labeled.txt").is_file():
        raise UserError(f"--start {start}: the start budget train/{start}/ is missing in {split} "
                        f"(has: {_budgets(split)})")
    pool = split / "train" / str(start) / "unlabeled"
    listed = pool / "unlabeled.txt"
    names = read_unlabeled_list(listed) if listed.is_file() and listed.read_text(encoding="utf-8").strip() else []
    truth = set(_truth_names(pool))
    without = [name for name in names if name not in truth]
    if without:
        raise UserError(f"the simulation needs the pool's truth: {len(without)} images of {listed} have none in "
                        f"{pool / 'truth.txt'} (e.g. {without[0]}; unlabeled-only images cannot be annotated)")
    if k * rounds > len(names):
        raise UserError(f"--k {k} x --rounds {rounds} = {k * rounds} images is more than the unlabeled pool of "
                        f"budget {start} ({len(names)} images in {listed})")
    return split


def open_out(out: Path, settings: Dict[str, Any], inputs) -> Dict[str, Any]:
    """Create the simulation folder or reopen an earlier one; returns its ``sim.json`` record (``settings`` and the
    ``seeds``, ``strategies``, ``methods`` and largest ``rounds`` asked for so far)."""
    refuse_protected(out, inputs)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} exists and is not a folder; choose another --out")
    entries = [e.name for e in out.iterdir()] if out.is_dir() else []
    if entries and read_marker(out) != SCRIPT:
        raise UserError(f"--out {out} is not empty and is not a simulation of {SCRIPT} (no {MARKER} of it); "
                        "the simulation writes only into a new folder or resumes its own: choose another --out")
    record_file = out / "sim.json"
    record = json.loads(record_file.read_text(encoding="utf-8")) if record_file.is_file() else {}
    fixed = {key: settings[key] for key in FIXED}
    if record:
        changed = [key for key in FIXED if record["settings"].get(key) != fixed[key]]
        if changed:
            before = ", ".join(f"{key}={record['settings'].get(key)!r}" for key in changed)
            raise UserError(f"--out {out} is a simulation with other settings ({before}); a resume keeps them: "
                            "use the same command, or choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    if not entries:
        write_marker(out, SCRIPT)
    record = {"settings": fixed,
              "seeds": sorted(set(record.get("seeds", [])) | {settings["seed"]}),
              "strategies": list(dict.fromkeys(record.get("strategies", []) + list(settings["strategies"]))),
              "methods": list(dict.fromkeys(record.get("methods", []) + list(settings["methods"]))),
              "rounds": max(record.get("rounds", 0), settings["rounds"])}
    text = json.dumps(record, indent=1, sort_keys=True) + "\n"
    write_atomically(record_file, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    return record


def _copy_tree(source: Path, target: Path) -> str:
    try:
        shutil.copytree(source, target, copy_function=os.link)
        return "hard links"
    except (OSError, shutil.Error):
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(source, target, copy_function=shutil.copy2)
        return "copies"


def _copied_record(source: Path, start: int) -> Dict[str, Any]:
    record = json.loads((source / "split.json").read_text(encoding="utf-8"))
    counts = record.get("counts", {})
    record["counts"] = {key: value for key, value in counts.items()
                        if not key.startswith("train/") or key.split("/")[1] == str(start)}
    if "rounds" in record:
        record["rounds"] = [r for r in record["rounds"] if r.get("budget") == start]
    record["simulation_copy"] = {"source": str(source), "budget": start}
    return record


def copy_split(source: Path, start: int, target: Path) -> str:
    """Make ``target`` (module docstring) unless it exists; built beside it and renamed into place, so that a
    stopped copy leaves no half split. Returns how the files were copied (``hard links``, ``copies``, ``kept``)."""
    if (target / "split.json").is_file():
        return "kept"
    target.parent.mkdir(parents=True, exist_ok=True)
    built = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent))
    try:
        how = set()
        for part in ("test", "val", f"train/{start}"):
            if (source / part).is_dir():
                how.add(_copy_tree(source / part, built / part))
        if (source / MARKER).is_file():
            shutil.copy2(source / MARKER, built / MARKER)
        text = json.dumps(_copied_record(source, start), indent=1, sort_keys=True) + "\n"
        (built / "split.json").write_text(text, encoding="utf-8")
        built.rename(target)
    except BaseException:
        shutil.rmtree(built, ignore_errors=True)
        raise
    return "copies" if "copies" in how else "hard links"
