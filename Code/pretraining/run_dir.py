"""Run-folder rules of ``pretrain.py``: the trainers' rules and implementation (Code/engine/run_folder.py,
Code/engine/reconcile.py) with ``pretrain.iters`` as the iteration count.

- a new or empty ``--out`` starts a run; one that stopped before its first checkpoint is started afresh;
- a run with the same config continues from ``checkpoints/latest.pt`` (``device`` may change); ``--iters K`` (or
  ``--set pretrain.iters=K``) extends or shortens it, not below its current step, also with ``--resume auto``; other
  differences are refused unless ``--resume auto`` without them (continue with the saved config) or ``--force``
  (delete and start over);
- ``--resume PATH`` (a pre-training checkpoint other than ``--out``'s own) starts a new ``--out`` from PATH's state;
- ``--force`` never deletes a folder that is not a run, or that contains the data split, the repository or PATH;
- ``metrics.csv`` rows written after the checkpoint's step (a run killed in between) are dropped on resume.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional, Set

from Code.engine.reconcile import Entry, RunPlan
from Code.engine.run_folder import prepare_run_dir


def describe_pretrain_iters_change(saved: Dict[str, Any], iters: int, step: int, where: str) -> str:
    """The note on a change of ``pretrain.iters`` at ``step``: the warm-up is kept and the cosine decay is
    stretched, factor(t) = ½(1 + cos(π·(t − W)/(K − W))) from the warm-up's end W to the new end K."""
    from Code.pretraining.trainer import warmup_cosine

    old, warmup = saved["pretrain"]["iters"], saved["pretrain"]["warmup_iters"]
    before, after = warmup_cosine(warmup, old)(step), warmup_cosine(warmup, iters)(step)
    verb = "extending" if iters > old else "shortening"
    return (f"{verb} {where} from {old} to {iters} iterations at step {step}: the cosine learning-rate decay is "
            f"stretched to end at step {iters} (the {warmup}-step warm-up unchanged; lr factor {before:.3f} → "
            f"{after:.3f}, reaching 0 at step {iters}); encoder.pth is rewritten at the new end")


PRETRAIN_ENTRY = Entry("pretrain.iters", describe_pretrain_iters_change,
                       history="its metrics.csv (k-NN history) starts afresh here")


def prepare_pretrain_dir(run_dir: Path, config: Dict[str, Any], resume: Optional[str], force: bool,
                         explicit: Set[str] = frozenset()) -> RunPlan:
    """Apply the rules of the module docstring; write ``run_dir/config.yaml``; return the :class:`RunPlan`.
    ``explicit``: dotted config keys the user set (a flag, ``--set``; ``"*"`` for all with ``--config``)."""
    return prepare_run_dir(run_dir, config, resume, force, explicit, entry=PRETRAIN_ENTRY)
