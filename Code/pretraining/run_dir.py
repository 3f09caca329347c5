"""Run-folder rules of ``pretrain.py``: the trainers' rules (Code/engine/run_folder.py), on the pre-training config.

- a new or empty ``--out`` starts a run; one that stopped before its first checkpoint is started afresh;
- a run with the same config continues from ``checkpoints/latest.pt`` (``device`` may change); another config is
  refused unless ``--resume auto`` (continue with the saved config) or ``--force`` (delete and start over);
- ``--resume PATH`` (a pre-training checkpoint other than ``--out``'s own) starts a new ``--out`` from PATH's state;
- ``--force`` never deletes a folder that is not a run, or that contains the data split, the repository or PATH;
- ``metrics.csv`` rows written after the checkpoint's step (a run killed in between) are dropped on resume.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional

from Code.engine.checkpoint import load_checkpoint
from Code.engine.run_folder import (FREE_TO_CHANGE, RunPlan, commit_plan, differences, open_run_folder,
                                    read_saved_config, truncate_metrics)
from Code.errors import UserError

TASK = "pretrain"


def _checkpoint(path: Path) -> Dict[str, Any]:
    state = load_checkpoint(path)
    if state["config"].get("task") != TASK:
        raise UserError(f"{path} is a checkpoint of {state['config'].get('task')}_train.py, not of pretrain.py")
    return state


def prepare_pretrain_dir(run_dir: Path, config: Dict[str, Any], resume: Optional[str], force: bool) -> RunPlan:
    """Apply the rules of the module docstring; write ``run_dir/config.yaml``; return the :class:`RunPlan`."""
    run_dir = Path(run_dir)
    resume_path, resume, state = open_run_folder(run_dir, config, resume, force)
    if resume_path is not None:
        if state == "run":
            raise UserError(f"--resume {resume_path}: {run_dir} already holds a run; resume into a new --out")
        saved = _checkpoint(resume_path)
        plan = RunPlan(saved["config"], resume_path, fork=True,
                       notes=[f"starting {run_dir} from {resume_path} (step {saved['step']})"])
    elif state == "run":
        latest = run_dir / "checkpoints" / "latest.pt"
        step = int(_checkpoint(latest).get("step") or 0)
        saved = read_saved_config(run_dir)
        diff = [k for k in differences(saved, config) if k not in FREE_TO_CHANGE]
        if diff and resume != "auto":
            raise UserError(f"{run_dir} holds a run with a different config (differs in: {', '.join(diff[:6])}); "
                            "add --resume auto to continue it with its saved config, or --force to start over")
        saved.update({key: config[key] for key in FREE_TO_CHANGE})
        plan = RunPlan(saved, latest)
        if diff:
            plan.notes.append(f"continuing with the saved config of {run_dir}; ignored: {', '.join(diff[:6])}")
        dropped = truncate_metrics(run_dir, step)
        if dropped:
            plan.notes.append(f"dropped {dropped} metrics.csv row(s) written after the checkpoint's step {step}")
    else:
        plan = RunPlan(config)
    return commit_plan(run_dir, plan)
