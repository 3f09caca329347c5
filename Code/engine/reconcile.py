"""The config a run continues with, when the one asked for differs from the one it was saved with.

Shared by every training entry (``seg_train.py``, ``cls_train.py``, ``pretrain.py``; Code/engine/run_folder.py
applies it): an entry differs only in its :class:`Entry` (which key counts the iterations, how a change of it
stretches the learning-rate schedule, what a longer run makes stale).

Rules: ``device`` follows the request; the iteration count, given explicitly (a flag or ``--set``), extends or
shortens the run (never below its current step); any other difference is refused, unless the run is continued
with ``--resume`` (``auto`` or a checkpoint path) and none of the differing keys was asked for explicitly: then the
saved values are kept and listed in a note. Error messages list every differing key up to :data:`SHOWN`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Set, Tuple

import yaml

from Code.engine.config import dump_config
from Code.errors import UserError

FREE_TO_CHANGE = {"device"}  # resuming on another device is fine: the new value is used
SHOWN = 8  # differing keys named in a message; more are counted ("and 3 more")


@dataclass
class RunPlan:
    """What the run-folder rules decided: the config to train with, the checkpoint to load (or None), whether that
    checkpoint comes from elsewhere (``fork``: the folder's history starts afresh) and notes for the user."""
    config: Dict[str, Any]
    checkpoint: Optional[Path] = None
    fork: bool = False
    notes: List[str] = field(default_factory=list)


@dataclass(frozen=True)
class Entry:
    """What the shared rules need to know of one entry script's config.

    ``describe_iters(saved, iters, step, where)`` returns the note for a run at ``step`` whose iteration count
    changes to ``iters`` (``iters >= step`` is checked before); ``stale``: outputs of a finished run that are out of
    date once its iteration count changes (deleted then: the run rewrites them at its new end); ``history``: what
    starts afresh in a folder started from another run's checkpoint."""
    iters_key: str
    describe_iters: Callable[[Dict[str, Any], int, int, str], str]
    stale: Tuple[str, ...] = ()
    history: str = "its metrics.csv starts afresh here"


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


def get_dotted(config: Dict[str, Any], dotted: str) -> Any:
    for part in dotted.split("."):
        config = config.get(part, {}) if isinstance(config, dict) else None
    return config


def set_dotted(config: Dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    for part in parents:
        config = config[part]
    config[leaf] = value


def listed(items: Sequence[str], limit: int = SHOWN) -> str:
    """``a, b, c`` — or the first ``limit`` items and ``and N more``."""
    shown = ", ".join(items[:limit])
    return shown + (f", and {len(items) - limit} more" if len(items) > limit else "")


def _hint(mode: str, out: Optional[str]) -> str:
    if mode == "fork":  # --resume PATH into a new --out: another --out would not help
        return (f"drop those flags to start {out} from it with its saved config, or leave out --resume to start a "
                "new run with them")
    if mode == "auto":
        return ("drop those flags to continue it with its saved config, or use --force or another --out to start "
                "a new run with them")
    return ("only --iters may change on an existing run: to continue it, run it without the other changes (or "
            "--resume auto without them); --force starts over")


def reconcile(saved: Dict[str, Any], asked: Dict[str, Any], explicit: Set[str], step: int, where: str,
              mode: str, entry: Entry, out: Optional[str] = None) -> RunPlan:
    """Config to continue a run saved as ``saved`` at ``step`` when ``asked`` was requested (module docstring).

    ``mode``: ``plain`` (the run in ``--out``, no ``--resume``), ``auto`` (``--resume auto``) or ``fork``
    (``--resume PATH`` into the new folder ``out``); ``where`` names the run in messages; ``explicit``: dotted keys
    the user set (``"*"``: all, when ``--config`` names a file)."""
    diff = differences(saved, asked)
    config = yaml.safe_load(dump_config(saved))
    plan = RunPlan(config)
    for key in [k for k in diff if k in FREE_TO_CHANGE]:
        config[key] = asked[key]
        plan.notes.append(f"{key}: {saved.get(key)} → {asked[key]}")
    diff = [k for k in diff if k not in FREE_TO_CHANGE]
    if entry.iters_key in diff and entry.iters_key in explicit:
        diff.remove(entry.iters_key)
        iters = get_dotted(asked, entry.iters_key)
        if iters < step:
            raise UserError(f"--iters {iters}: {where} is already at step {step}; it can be extended or shortened "
                            f"to no fewer than {step} iterations")
        plan.notes.append(entry.describe_iters(saved, iters, step, where))
        set_dotted(config, entry.iters_key, iters)
    if not diff:
        return plan
    clashing = [k for k in diff if k in explicit or "*" in explicit]
    if mode == "plain" or clashing:
        shown = [f"{k} (saved {get_dotted(saved, k)!r}, asked {get_dotted(asked, k)!r})" for k in (clashing or diff)]
        raise UserError(f"{where} holds a run with a different config (differs in: {listed(shown)}); "
                        f"{_hint(mode, out)}")
    plan.notes.append(f"continuing with the saved config of {where}; not taken from the defaults: {listed(diff)}")
    return plan


def describe_iters_change(saved: Dict[str, Any], iters: int, step: int, where: str) -> str:
    """The trainers' note on a change of ``train.iters`` at ``step``: the poly schedule is recomputed."""
    old, power = saved["train"]["iters"], saved["train"]["poly_power"]
    before = max(0.0, 1.0 - step / old) ** power
    after = max(0.0, 1.0 - step / iters) ** power
    verb = "extending" if iters > old else "shortening"
    return (f"{verb} {where} from {old} to {iters} iterations at step {step}: the poly learning-rate schedule is "
            f"stretched to {iters} iterations from step {step} (lr factor {before:.3f} → {after:.3f}, reaching 0 at "
            f"step {iters})")
