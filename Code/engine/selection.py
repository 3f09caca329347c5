"""The training's choice of ``best.pt``: one ordering of the val metrics of :mod:`Code.inference.metrics`."""
from __future__ import annotations

import math
from typing import Any, Dict, Tuple


def _finite(value: Any) -> float:
    value = float(value)
    return -math.inf if math.isnan(value) else value


PRIMARY_METRIC = {"seg": "dice", "cls": "balanced_accuracy"}  # the val metric that chooses best.pt, per task


def best_score(metrics: Dict[str, Any], task: str, step: int) -> Tuple[float, float, int]:
    """The key that picks ``best.pt`` among evaluations; the larger tuple wins (one rule for both tasks):

    ``(primary, auc, −step)`` of the **val** metrics, with primary = ``dice`` for ``task == "seg"`` and
    ``balanced_accuracy`` for ``"cls"`` (not accuracy: on an imbalanced val it favours the majority class). A tie
    in the primary metric goes to the higher val AUC, a tie in both to the earliest ``step``. NaN counts as the
    lowest value (−inf). Every selection of a best step (the trainer's ``best.pt``, ``reporting.runs.select_row``)
    compares these tuples, so the result does not depend on the order in which evaluations are compared."""
    if task not in PRIMARY_METRIC:
        raise ValueError(f"unknown task {task!r} (expected 'seg' or 'cls')")
    return (_finite(metrics[PRIMARY_METRIC[task]]), _finite(metrics.get("auc", math.nan)), -int(step))
