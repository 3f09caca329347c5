"""Run-folder rules of ``seg_train.py`` / ``cls_train.py`` (and ``pretrain.py``, through
Code/pretraining/run_dir.py): what happens to ``--out`` before training starts.

A folder is in one of four states (:func:`folder_state`):

- ``new``: missing or empty;
- ``unstarted``: a Hermes ``config.yaml`` but no ``checkpoints/latest.pt`` (a run that failed at start-up or died
  before its first checkpoint): nothing to protect, it is started afresh;
- ``run``: ``config.yaml`` and ``checkpoints/latest.pt``;
- ``foreign``: anything else that is not empty (never written to, never deleted).

Rules (README "Run folders"): a ``run`` with the same config continues from ``latest.pt``; one whose config differs
only in ``train.iters`` (given as a flag) is extended or shortened (never below its current step;
Code/engine/reconcile.py, where ``pretrain.iters`` plays that part for ``pretrain.py``); any other
difference is refused unless ``--resume`` (continue with the saved config; flags that contradict it are refused,
never ignored) or ``--force`` (delete and start over). ``--resume PATH`` continues the run of ``--out`` when PATH is
its own ``latest.pt``, and otherwise starts a *new* run folder from PATH's state (refused if ``--out`` holds another
run). ``--force`` goes through the one output rule (Code/outputs.py): it refuses to delete a folder that is not a
run of this task, or that is or contains an input (the data split, the checkpoint to resume from, the encoder
weights), the repository, the working directory or the home folder, or that lies inside an input folder.
"""
from __future__ import annotations

import csv
import os
import shutil
import sys
from pathlib import Path
from typing import Any, Dict, Iterable, Optional, Set, Tuple

import yaml

from Code.engine.config import complete_saved_config, dump_config
from Code.engine.reconcile import (FREE_TO_CHANGE, Entry, RunPlan, describe_iters_change, differences,  # noqa: F401
                                   get_dotted, reconcile)
from Code.engine.run_kind import script_of
from Code.errors import UserError
from Code.outputs import REPO_ROOT, check_replaceable, read_marker  # noqa: F401 (REPO_ROOT: re-exported)

TRAINING_TASKS = ("seg", "cls")  # seg_train.py / cls_train.py configs: completed with keys added since (config.py)
ARTEFACTS = ("config.yaml", "metrics.csv", "pseudo_labels.csv", "final_metrics.json", "test_predictions_final.csv",
             "test_predictions_best.csv", "val_predictions_final.csv", "val_predictions_best.csv", "tensorboard",
             "checkpoints")
END_OF_RUN = ARTEFACTS[3:8]  # the sealed test's outputs (and val's per-image CSVs): stale once the run is extended
TRAIN_ENTRY = Entry("train.iters", describe_iters_change, stale=END_OF_RUN,
                    history="its metrics.csv and best.pt start afresh here")


def flat_keys(overrides: Iterable[Dict[str, Any]], prefix: str = "") -> Set[str]:
    """Dotted keys set by a list of nested override dicts (``[{"train": {"iters": 5}}]`` → ``{"train.iters"}``)."""
    keys: Set[str] = set()
    for item in overrides:
        for key, value in item.items():
            if isinstance(value, dict):
                keys |= flat_keys([value], f"{prefix}{key}.")
            else:
                keys.add(f"{prefix}{key}")
    return keys


def read_saved_config(run_dir: Path) -> Optional[Dict[str, Any]]:
    """The Hermes config saved in ``run_dir/config.yaml`` (a mapping with ``task`` and ``method``), else None."""
    path = run_dir / "config.yaml"
    if not path.is_file():
        return None
    try:
        saved = yaml.safe_load(path.read_text())
    except yaml.YAMLError:
        return None
    if not (isinstance(saved, dict) and "task" in saved and "method" in saved):
        return None
    return complete_saved_config(saved) if saved["task"] in TRAINING_TASKS else saved


def folder_state(run_dir: Path) -> str:
    """``new``, ``unstarted``, ``run`` or ``foreign`` (see the module docstring)."""
    if not run_dir.exists() or (run_dir.is_dir() and not any(run_dir.iterdir())):
        return "new"
    if not run_dir.is_dir() or read_saved_config(run_dir) is None or read_marker(run_dir) == "rescore.py":
        return "foreign"  # a re-scored copy (Code/rescore.py) has a run's config.yaml but is no run to continue
    return "run" if (run_dir / "checkpoints" / "latest.pt").is_file() else "unstarted"


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def check_force_target(run_dir: Path, config: Dict[str, Any], resume_from: Optional[Path]) -> None:
    """UserError unless ``run_dir`` may be deleted by ``--force``: a run folder of this task (its ``config.yaml``
    is the run folder's marker) holding no input (the data split, the checkpoint to resume from, the encoder
    weights) and not the repository: the one output rule of Code/outputs.py."""
    inputs = [(config["data"].get("split"), f"the --data split {config['data'].get('split')}"),
              (resume_from, f"the checkpoint to resume from ({resume_from})")]
    weights = config.get("model", {}).get("encoder_weights")
    if weights and weights != "imagenet":
        inputs.append((weights, f"the encoder weights {weights}"))
    script = script_of(config.get("task"))
    saved = read_saved_config(run_dir) if run_dir.is_dir() else None
    if saved is not None and saved.get("task") != config.get("task"):
        other = script_of(saved.get("task"))
        raise UserError(f"--force refused: {run_dir} holds a run of {other}; {script} replaces only its own runs: "
                        "choose another --out")
    check_replaceable(run_dir, script, inputs, owned=folder_state(run_dir) != "foreign",
                      own_kind="a Hermes run folder (no config.yaml of a run)")


def clear_artefacts(run_dir: Path) -> None:
    """Remove what a run writes (config, metrics, TensorBoard, checkpoints), leaving any other file alone."""
    for name in ARTEFACTS:
        path = run_dir / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def truncate_metrics(run_dir: Path, step: int) -> int:
    """Drop ``metrics.csv`` rows after ``step`` (written by a run killed before its checkpoint); returns how many."""
    path = run_dir / "metrics.csv"
    if not path.is_file():
        return 0
    with path.open(newline="") as handle:
        rows = list(csv.reader(handle))
    if not rows:
        return 0
    kept = [rows[0]] + [r for r in rows[1:] if r and int(float(r[0])) <= step]
    dropped = len(rows) - len(kept)
    if dropped:
        tmp = path.with_name(".metrics.csv.tmp")
        with tmp.open("w", newline="") as handle:
            csv.writer(handle).writerows(kept)
        os.replace(tmp, path)
    return dropped


def _checkpoint_info(path: Path, task: str) -> Dict[str, Any]:
    from Code.common.checkpoint import load_checkpoint

    state = load_checkpoint(path)
    if state.get("slim"):
        raise UserError(f"{path} is a slim best.pt (weights only, no optimiser or data-stream state); a run continues "
                        "from its checkpoints/latest.pt")
    saved_task = state["config"].get("task")
    if saved_task != task:
        raise UserError(f"{path} is a checkpoint of {script_of(saved_task)}, not of {script_of(task)}; resume it "
                        "with that script")
    saved = state["config"]
    if saved.get("task") in TRAINING_TASKS:  # pre-training configs have a schema of their own
        saved = complete_saved_config(saved)
    return {"config": saved, "step": int(state.get("step") or 0)}


def open_run_folder(run_dir: Path, config: Dict[str, Any], resume: Optional[str], force: bool,
                    ) -> Tuple[Optional[Path], Optional[str], str]:
    """The rules every entry shares before its own: ``--out`` is no file; ``--resume`` naming the folder's own
    ``latest.pt`` means ``auto``; ``--force`` deletes only a run folder; a foreign folder is refused; an unstarted
    one is cleared. Returns ``(resume path or None, resume, folder state: new | run)``."""
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError(f"--out {run_dir} is an existing file, not a folder; choose another --out")
    resume_path = Path(resume) if resume and resume != "auto" else None
    if resume_path is not None and resume_path.resolve() == (run_dir / "checkpoints" / "latest.pt").resolve():
        resume_path, resume = None, "auto"  # its own latest.pt: the same as --resume auto
    if force and run_dir.exists():
        check_force_target(run_dir, config, resume_path)
        shutil.rmtree(run_dir)
    state = folder_state(run_dir)
    if state == "foreign":
        raise UserError(f"{run_dir} exists and is not a Hermes run folder; choose another --out "
                        "(--force deletes only run folders)")
    if state == "unstarted":
        clear_artefacts(run_dir)
        print(f"note: {run_dir} held a run that stopped before its first checkpoint; starting it afresh",
              file=sys.stderr)
        state = "new"
    return resume_path, resume, state


def prepare_run_dir(run_dir: Path, config: Dict[str, Any], resume: Optional[str], force: bool,
                    explicit: Set[str] = frozenset(), entry: Entry = TRAIN_ENTRY) -> RunPlan:
    """Apply the run-folder rules to ``run_dir``; write its ``config.yaml``; return the :class:`RunPlan`.

    ``explicit``: dotted config keys the user set by a flag or ``--set`` (``"*"``: all, when ``--config`` is given);
    ``entry``: the entry script's iteration key and schedule note (default: the trainers'; pretrain.py passes its
    own, Code/pretraining/run_dir.py)."""
    run_dir = Path(run_dir)
    resume_path, resume, state = open_run_folder(run_dir, config, resume, force)
    if resume_path is not None:
        if state == "run":
            own = _inside(resume_path.resolve(), run_dir.resolve())
            raise UserError(f"--resume {resume_path}: {run_dir} already holds "
                            + ("that run; continue it with --resume auto, or branch from this checkpoint into a new "
                               "--out" if own else "another run; resume into a new --out (or --force to replace "
                                                   "that run)"))
        info = _checkpoint_info(resume_path, config["task"])
        plan = reconcile(info["config"], config, explicit, info["step"], str(resume_path), "fork", entry,
                         out=str(run_dir))
        plan.checkpoint, plan.fork = resume_path, True
        plan.notes.append(f"starting {run_dir} from {resume_path} (step {info['step']}); {entry.history}")
    elif state == "run":
        latest = run_dir / "checkpoints" / "latest.pt"
        info = _checkpoint_info(latest, config["task"])
        plan = reconcile(read_saved_config(run_dir), config, explicit, info["step"], str(run_dir),
                         "auto" if resume == "auto" else "plain", entry)
        plan.checkpoint = latest
        dropped = truncate_metrics(run_dir, info["step"])
        if dropped:
            plan.notes.append(f"dropped {dropped} metrics.csv row(s) written after the checkpoint's step {info['step']}")
        if get_dotted(plan.config, entry.iters_key) != get_dotted(info["config"], entry.iters_key):
            for name in entry.stale:  # test is scored again at the new end
                (run_dir / name).unlink(missing_ok=True)
    else:
        plan = RunPlan(config)
    return commit_plan(run_dir, plan)


def commit_plan(run_dir: Path, plan: RunPlan) -> RunPlan:
    """Write ``run_dir/config.yaml`` (atomically) from the plan's config and print its notes."""
    run_dir.mkdir(parents=True, exist_ok=True)
    tmp = run_dir / ".config.yaml.tmp"
    tmp.write_text(dump_config(plan.config))
    os.replace(tmp, run_dir / "config.yaml")
    for note in plan.notes:
        print(f"note: {note}", file=sys.stderr)
    return plan
