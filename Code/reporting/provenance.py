"""What a report table's runs were made from, for its caption: labeled draws or seeds, and test curves.

- **Draws.** ``data_split.py --draw-seed S`` writes ``draw_seed`` into the split's ``split.json``; a run's split is
  ``config["data"]["split"]``. A row whose runs come from distinct draw seeds is over *labeled draws*; otherwise
  (one draw, or splits without ``draw_seed``) it is over *seeds on one labeled draw*.
- **Test curves.** A run made with ``eval.test_curves: true`` had test evaluated during training (``metrics.csv``
  and TensorBoard show it), so a table made from it must say so: ``final_metrics.json`` ``test_curves``, else the
  run's config, else (runs made before the test split was sealed) test columns in its ``metrics.csv``.

:func:`annotate` runs before the rows are formed (it makes the draws of one row pool).
"""
from __future__ import annotations

import json
import re
from collections import defaultdict
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from Code.errors import UserError

ROOT = Path(__file__).resolve().parents[2]


def _split_record(split: Optional[str]) -> Optional[Path]:
    """The ``split.json`` of a split folder given as in a config (relative to the working folder or the repo)."""
    if not split:
        return None
    for base in (Path.cwd(), ROOT):
        path = base / split / "split.json"
        if path.is_file():
            return path
    return None


def draw_seed(config: Dict[str, Any]) -> Optional[int]:
    """The ``draw_seed`` of the run's split (None: no split.json, or a split made without ``--draw-seed``)."""
    path = _split_record((config.get("data") or {}).get("split"))
    if path is None:
        return None
    try:
        value = json.loads(path.read_text()).get("draw_seed")
    except (json.JSONDecodeError, AttributeError) as exc:
        raise UserError(f"{path}: not a split record ({exc})") from None
    return None if value is None else int(value)


def test_curves(run: Path, config: Dict[str, Any]) -> bool:
    """Whether test was evaluated during training: ``final_metrics.json`` ``test_curves``, else ``eval.test_curves``,
    else (a run made before the test split was sealed, which has neither) test columns in its ``metrics.csv``."""
    record = run / "final_metrics.json"
    if record.is_file():
        try:
            doc = json.loads(record.read_text())
        except json.JSONDecodeError as exc:
            raise UserError(f"{record}: not valid JSON ({exc})") from None
        if isinstance(doc, dict) and "test_curves" in doc:
            return bool(doc["test_curves"])
    if "test_curves" in (config.get("eval") or {}):
        return bool(config["eval"]["test_curves"])
    return "dice" in _metrics_header(run / "metrics.csv")


def _metrics_header(path: Path) -> List[str]:
    try:
        with path.open() as handle:
            return handle.readline().strip().split(",")
    except OSError:
        return []


def annotate(results: List[Dict[str, Any]]) -> None:
    """Add ``draw_seed`` and ``test_curves`` to every run's result dict, in place. A split of a labeled draw whose
    folder name names the draw as a whole number (``run_experiments.py --draws 0 1 2 --data splits/busi_d{draw}``) is
    written ``splits/busi_d{draw}`` in the run's config and data set name, so that the draws of one row pool (as
    ``--per-seed`` does for seeds); ``busi144`` stays as it is for draw 1."""
    for r in results:
        r["draw_seed"] = draw_seed(r["config"])
        r["test_curves"] = test_curves(Path(r["run"]), r.get("saved_config", r["config"]))
        split = (r["config"].get("data") or {}).get("split")
        if r["draw_seed"] is not None and isinstance(split, str):
            name = re.sub(rf"(?<![0-9]){r['draw_seed']}(?![0-9])", "{draw}", Path(split).name)
            r["config"]["data"]["split"] = str(Path(split).parent / name)
            r["dataset"] = name


def over_draws(runs: List[Dict[str, Any]]) -> bool:
    """True when the runs (one row, several seeds) come from distinct labeled draws, one run per draw."""
    draws = [r.get("draw_seed") for r in runs]
    return len(runs) > 1 and None not in draws and len(set(draws)) == len(draws)


def _cells(runs: List[Dict[str, Any]]) -> Dict[Tuple[Any, ...], List[Dict[str, Any]]]:
    """The runs grouped as a table cell pools them: by method row, task, data set and label budget."""
    cells: Dict[Tuple[Any, ...], List[Dict[str, Any]]] = defaultdict(list)
    for r in runs:
        cells[(r["method"], r["task"], r["dataset"], r["labels"])].append(r)
    return cells


def unit_of(runs: List[Dict[str, Any]]) -> str:
    """"draws" when every row (method) of these runs that pools several runs is over labeled draws, "seeds" when
    none is, "seeds/draws" when mixed (the caption then names the rows)."""
    kinds = {over_draws(rs) for rs in _cells(runs).values() if len(rs) > 1}
    return "draws" if kinds == {True} else "seeds/draws" if len(kinds) == 2 else "seeds"


def caption(runs: List[Dict[str, Any]]) -> str:
    """What the mean ± std of a table's cells is over, and a warning when any run had test curves."""
    unit = unit_of(runs)
    if unit == "draws":
        text = "over labeled draws (draw s trained with seed s)"
    elif unit == "seeds":
        text = "over seeds (one labeled draw)"
    else:
        names = ", ".join(sorted({key[0] for key, rs in _cells(runs).items() if over_draws(rs)}))
        text = f"over labeled draws in the rows {names}, over seeds on one labeled draw in the others"
    curves = curves_note(runs)
    return f"{text}; {curves}" if curves else text


def curves_note(runs: List[Dict[str, Any]]) -> str:
    """'' when no run had test curves; else how many did (test was seen during their training)."""
    curves = sum(bool(r.get("test_curves")) for r in runs)
    if not curves:
        return ""
    return (f"{curves} of {len(runs)} runs were made with test curves (`eval.test_curves: true`): test was "
            "evaluated during their training")
