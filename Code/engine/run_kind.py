"""Which entry script a run folder or checkpoint belongs to: its config's ``task`` (``seg``, ``cls``, ``pretrain``).

Used for messages ("a checkpoint of pretrain.py") and by the readers of run folders (report.py, make_figures.py)
to refuse, in one line, a run of the other kind.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import yaml

SCRIPTS = {"seg": "seg_train.py", "cls": "cls_train.py", "pretrain": "pretrain.py"}


def script_of(task: Any) -> str:
    """The entry script that writes runs and checkpoints of ``task`` (``seg`` → ``seg_train.py``)."""
    return SCRIPTS.get(task, f"an unknown script (task {task!r})")


def folder_task(folder: Path) -> Optional[str]:
    """The ``task`` saved in ``folder/config.yaml``, or None (no such file, or not a Hermes config)."""
    path = Path(folder) / "config.yaml"
    if not path.is_file():
        return None
    try:
        saved = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError):
        return None
    task = saved.get("task") if isinstance(saved, dict) else None
    return task if isinstance(task, str) else None


def describe_task(task: Optional[str]) -> str:
    """``a pre-training run (pretrain.py)``, ``a training run (seg_train.py)``, or ``not a Hermes run``."""
    if task == "pretrain":
        return "a pre-training run (pretrain.py)"
    if task in SCRIPTS:
        return f"a training run ({SCRIPTS[task]})"
    return "not a Hermes run (no config.yaml of one)"
