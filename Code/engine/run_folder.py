"""Run-folder rules of ``seg_train.py`` / ``cls_train.py``: what happens to ``--out`` before training starts.

A folder is in one of four states (:func:`folder_state`):

- ``new``: missing or empty;
- ``unstarted``: a Hermes ``config.yaml`` but no ``checkpoints/latest.pt`` (a run that failed at start-up or died
  before its first checkpoint): nothing to protect, it is started afresh;
- ``run``: ``config.yaml`` and ``checkpoints/latest.pt``;
- ``foreign``: anything else that is not empty (never written to, never deleted).

Rules (README "Run folders"): a ``run`` with the same config continues from ``latest.pt``; one whose config differs
only in ``train.iters`` (given as a flag) is extended or shortened (never below its current step); any other
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Set, Tuple

import yaml

from Code.engine.config import dump_config
from Code.errors import UserError
from Code.outputs import REPO_ROOT, check_replaceable  # noqa: F401 (REPO_ROOT: re-exported)

ARTEFACTS = ("config.yaml", "metrics.csv", "pseudo_labels.csv", "final_metrics.json", "test_predictions_final.csv",
             "test_predictions_best.csv", "tensorboard", "checkpoints")
END_OF_RUN = ARTEFACTS[3:6]  # the sealed test's outputs: stale once the run is extended
FREE_TO_CHANGE = {"device"}  # resuming on another device is fine: the new value is used


@dataclass
class RunPlan:
    """What ``prepare_run_dir`` decided: the config to train with, the checkpoint to load (or None), whether that
    checkpoint comes from elsewhere (``fork``: metrics history and best.pt start afresh) and notes for the user."""
    config: Dict[str, Any]
    checkpoint: Optional[Path] = None
    fork: bool = False
    notes: List[str] = field(default_factory=list)


def differences(a: Dict[str, Any], b: Dict[str, Any], prefix: str = "") -> List[str]:
    """Dotted keys whose values differ between two nested dicts."""
    out = []
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key), b.get(key)
        if isinstance(va, dict) and isinstance(vb, dict):
            out.extend(differences(va, vb, f"{prefix}{key}."))
        elif va != vb:
            out.append(f"{prefix}{key}")
    return out


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


def _get(config: Dict[str, Any], dotted: str) -> Any:
    for part in dotted.split("."):
        config = config.get(part, {}) if isinstance(config, dict) else None
    return config


def read_saved_config(run_dir: Path) -> Optional[Dict[str, Any]]:
    """The Hermes config saved in ``run_dir/config.yaml`` (a mapping with ``task`` and ``method``), else None."""
    path = run_dir / "config.yaml"
    if not path.is_file():
        return None
    try:
        saved = yaml.safe_load(path.read_text())
    except yaml.YAMLError:
        return None
    return saved if isinstance(saved, dict) and "task" in saved and "method" in saved else None


def folder_state(run_dir: Path) -> str:
    """``new``, ``unstarted``, ``run`` or ``foreign`` (see the module docstring)."""
    if not run_dir.exists() or (run_dir.is_dir() and not any(run_dir.iterdir())):
        return "new"
    if not run_dir.is_dir() or read_saved_config(run_dir) is None:
        return "foreign"
    return "run" if (run_dir / "checkpoints" / "latest.pt").is_file() else "unstarted"


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


SCRIPTS = {"seg": "seg_train.py", "cls": "cls_train.py", "pretrain": "pretrain.py"}  # task → its entry script


def check_force_target(run_dir: Path, config: Dict[str, Any], resume_from: Optional[Path]) -> None:
    """UserError unless ``run_dir`` may be deleted by ``--force``: a run folder of this task (its ``config.yaml``
    is the run folder's marker) holding no input (the data split, the checkpoint to resume from, the encoder
    weights) and not the repository: the one output rule of Code/outputs.py."""
    inputs = [(config["data"].get("split"), f"the --data split {config['data'].get('split')}"),
              (resume_from, f"the checkpoint to resume from ({resume_from})")]
    weights = config.get("model", {}).get("encoder_weights")
    if weights and weights != "imagenet":
        inputs.append((weights, f"the encoder weights {weights}"))
    script = SCRIPTS.get(config.get("task"), f"{config.get('task')}_train.py")
    saved = read_saved_config(run_dir) if run_dir.is_dir() else None
    if saved is not None and saved.get("task") != config.get("task"):
        other = SCRIPTS.get(saved.get("task"), str(saved.get("task")))
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
    from Code.engine.checkpoint import load_checkpoint

    state = load_checkpoint(path)
    if state.get("slim"):
        raise UserError(f"{path} is a slim best.pt (weights only, no optimiser or data-stream state); a run continues "
                        "from its checkpoints/latest.pt")
    saved_task = state["config"].get("task")
    if saved_task != task:
        raise UserError(f"{path} is a checkpoint of {saved_task}_train.py; resume it with that script")
    return {"config": state["config"], "step": int(state.get("step") or 0)}


def _reconcile(saved: Dict[str, Any], asked: Dict[str, Any], explicit: Set[str], step: int, where: str,
               keep_saved: bool) -> RunPlan:
    """Config to continue a run saved as ``saved`` at ``step`` when ``asked`` was requested.

    ``train.iters`` given explicitly extends (or shortens, not below ``step``); ``device`` follows the request;
    other differences are refused — unless ``keep_saved`` (``--resume``) and none of them was asked for explicitly,
    in which case the saved values are kept and listed in a note."""
    diff = differences(saved, asked)
    config = yaml.safe_load(dump_config(saved))
    plan = RunPlan(config)
    for key in [k for k in diff if k in FREE_TO_CHANGE]:
        config[key] = asked[key]
        plan.notes.append(f"{key}: {saved.get(key)} → {asked[key]}")
    diff = [k for k in diff if k not in FREE_TO_CHANGE]
    if "train.iters" in diff and "train.iters" in explicit:
        diff.remove("train.iters")
        plan.notes.append(describe_iters_change(saved, asked["train"]["iters"], step, where))
        config["train"]["iters"] = asked["train"]["iters"]
    if not diff:
        return plan
    clashing = [k for k in diff if k in explicit or "*" in explicit]
    if not keep_saved or clashing:
        shown = ", ".join(f"{k} (saved {_get(saved, k)!r}, asked {_get(asked, k)!r})" for k in (clashing or diff)[:4])
        hint = ("drop those flags to continue it with its saved config, or use --force or another --out to start "
                "a new run with them") if keep_saved else \
            ("only --iters may change on an existing run: to continue it, run it without the other changes (or "
             "--resume auto without them); --force starts over")
        raise UserError(f"{where} holds a run with a different config (differs in: {shown}); {hint}")
    plan.notes.append(f"continuing with the saved config of {where}; not taken from the defaults: {', '.join(diff[:6])}")
    return plan


def describe_iters_change(saved: Dict[str, Any], iters: int, step: int, where: str) -> str:
    """Check and describe a change of ``train.iters`` on a run at ``step`` (the poly schedule is recomputed)."""
    old, power = saved["train"]["iters"], saved["train"]["poly_power"]
    if iters < step:
        raise UserError(f"--iters {iters}: {where} is already at step {step}; it can be extended or shortened to "
                        f"no fewer than {step} iterations")
    before = max(0.0, 1.0 - step / old) ** power
    after = max(0.0, 1.0 - step / iters) ** power
    verb = "extending" if iters > old else "shortening"
    return (f"{verb} {where} from {old} to {iters} iterations at step {step}: the poly learning-rate schedule is "
            f"stretched to {iters} iterations from step {step} (lr factor {before:.3f} → {after:.3f}, reaching 0 at "
            f"step {iters})")


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
                    explicit: Set[str] = frozenset()) -> RunPlan:
    """Apply the run-folder rules to ``run_dir``; write its ``config.yaml``; return the :class:`RunPlan`.

    ``explicit``: dotted config keys the user set by a flag or ``--set`` (``"*"``: all, when ``--config`` is given)."""
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
        plan = _reconcile(info["config"], config, explicit, info["step"], str(resume_path), keep_saved=True)
        plan.checkpoint, plan.fork = resume_path, True
        plan.notes.append(f"starting {run_dir} from {resume_path} (step {info['step']}); its metrics.csv and best.pt "
                          "start afresh here")
    elif state == "run":
        latest = run_dir / "checkpoints" / "latest.pt"
        info = _checkpoint_info(latest, config["task"])
        plan = _reconcile(read_saved_config(run_dir), config, explicit, info["step"], str(run_dir),
                          keep_saved=resume == "auto")
        plan.checkpoint = latest
        dropped = truncate_metrics(run_dir, info["step"])
        if dropped:
            plan.notes.append(f"dropped {dropped} metrics.csv row(s) written after the checkpoint's step {info['step']}")
        if plan.config["train"]["iters"] != info["config"]["train"]["iters"]:
            for name in END_OF_RUN:  # test is scored again at the new end
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
