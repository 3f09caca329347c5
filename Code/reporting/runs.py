"""Reading training runs for reports: finding run folders, taking each run's test metrics, and telling apart runs
whose configs differ in more than the seed.

Test metrics come from ``final_metrics.json`` (``test_at_best_val``, ``test_at_final``: the sealed test, scored once
after the last step). A run without it (unfinished, ``report.py --include-incomplete``) has test metrics only when
its ``metrics.csv`` carries test columns (``eval.test_curves``, or a run made before the test was sealed); its row is
then picked by **val** metrics only (:func:`select_row`, the trainer's rule). Whether test was visible during
training is :func:`Code.reporting.provenance.test_curves`'s to say."""
from __future__ import annotations

import csv
import json
import math
import re
from collections import defaultdict
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import yaml

from Code.engine.config import complete_saved_config, load_config
from Code.engine.selection import best_score
from Code.inference.metrics import METRIC_KEYS
from Code.errors import UserError



def find_runs(paths: Sequence[str]) -> List[Path]:
    """Run folders (with ``metrics.csv``) named by ``paths`` or found below them, sorted and without duplicates.
    Pre-training runs (pretrain.py) are refused when named and left out (counted) when found below a folder."""
    from Code.engine.run_kind import folder_task

    runs: List[Path] = []
    pretrain = 0
    for raw in paths:
        path = Path(raw)
        if (path / "metrics.csv").is_file():
            if folder_task(path) == "pretrain":
                raise UserError(f"{path} is a pre-training run (pretrain.py), not a training run; report.py reads "
                                "seg_train/cls_train runs")
            runs.append(path)
        elif path.is_dir():
            found = [(p.parent, folder_task(p.parent)) for p in sorted(path.rglob("metrics.csv"))]
            runs.extend(p for p, task in found if task != "pretrain")
            pretrain += sum(task == "pretrain" for _, task in found)
        else:
            raise UserError(f"not a run folder or folder of runs: {path}")
    unique = list(dict.fromkeys(p.resolve() for p in runs))
    if not unique:
        skipped = f" ({pretrain} pre-training run(s) of pretrain.py left out)" if pretrain else ""
        raise UserError(f"no runs (folders with metrics.csv) found in {', '.join(paths)}{skipped}")
    return unique


def read_metrics_csv(path: Path) -> List[Dict[str, float]]:
    """Rows of ``metrics.csv`` as dicts of floats (``step`` plus the metric columns: ``val_<name>``, and the test
    metrics under their names where the run logged test curves)."""
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        missing = [k for k in ("step",) if k not in (reader.fieldnames or [])]
        if missing:
            raise UserError(f"{path}: missing columns {', '.join(missing)}")
        try:
            return [{k: float(v) for k, v in row.items() if k is not None} for row in reader]
        except (TypeError, ValueError) as exc:
            raise UserError(f"{path}: unreadable value ({exc})") from None


def _val_metrics(row: Dict[str, float]) -> Optional[Dict[str, float]]:
    if any(f"val_{k}" not in row or math.isnan(row[f"val_{k}"]) for k in ("dice", "accuracy")):
        return None
    return {k: row.get(f"val_{k}", math.nan) for k in METRIC_KEYS}


def select_row(rows: List[Dict[str, float]], select: str, task: str) -> Tuple[Dict[str, float], str]:
    """``(row, how)``: the ``final`` (last) row, or the row whose **val** metrics score highest by
    :func:`Code.engine.selection.best_score` for ``task`` — the trainer's rule: primary metric, then AUC, then the
    earliest step (``how`` = ``best (val)``); without val metrics the final row (``final (no val)``)."""
    if select == "final":
        return rows[-1], "final"
    scored = [(row, _val_metrics(row)) for row in rows]
    scored = [(row, val) for row, val in scored if val is not None]
    if not scored:
        return rows[-1], "final (no val)"
    return max(scored, key=lambda item: best_score(item[1], task, int(item[0]["step"])))[0], "best (val)"


def _test_of(metrics: Optional[Dict[str, Any]]) -> Optional[Dict[str, float]]:
    return None if metrics is None else {k: float(metrics.get(k, math.nan)) for k in METRIC_KEYS}


def _test_points(run: Path, rows: List[Dict[str, float]], task: str) -> Optional[Dict[str, Any]]:
    """Test metrics at the val-chosen and at the final step: from ``final_metrics.json``, else (an unfinished run)
    from ``metrics.csv``'s test columns; None when the run has neither (a sealed run that has not finished)."""
    final_path = run / "final_metrics.json"
    saved = json.loads(final_path.read_text()) if final_path.is_file() else None
    if isinstance(saved, dict) and saved.get("test_at_final"):
        best = saved.get("test_at_best_val")
        return {"best_step": None if best is None else int(best["step"]), "best_metrics": _test_of(best),
                "final_step": int(saved["test_at_final"].get("step", saved.get("step"))),
                "final_metrics": _test_of(saved["test_at_final"])}
    if not rows or "dice" not in rows[0]:
        return None
    best, best_how = select_row(rows, "best", task)
    found = best_how == "best (val)"
    return {"best_step": int(best["step"]) if found else None, "best_metrics": _test_of(best) if found else None,
            "final_step": int(rows[-1]["step"]), "final_metrics": _test_of(rows[-1])}


def run_identity(run: Path, beside: str = "metrics.csv") -> Dict[str, Any]:
    """What names a run's row and pairs it: ``run``, ``method`` (:func:`method_label`), ``task``, ``dataset``,
    ``labels``, ``seed``, the completed ``config`` and the ``saved_config`` as written; a UserError without its
    ``config.yaml`` (``beside``: the file that made it look like a run, for the message)."""
    cfg_path = run / "config.yaml"
    if not cfg_path.is_file():
        raise UserError(f"{run}: no config.yaml next to {beside}")
    saved = yaml.safe_load(cfg_path.read_text()) or {}
    config = complete_saved_config(saved)
    split, labels = config.get("data", {}).get("split"), config.get("data", {}).get("labels")
    return {"run": run, "method": method_label(config), "task": config.get("task", "seg"),
            "dataset": Path(split).name if split else "phantom", "labels": "default" if labels is None else labels,
            "seed": config.get("seed"), "config": config, "saved_config": saved}


def read_run(run: Path, select_override: Optional[str]) -> Optional[Dict[str, Any]]:
    """One run's identity (:func:`run_identity`) and its test metrics at the val-chosen and the final step (see
    the module docstring); None when it has no test metrics yet."""
    identity = run_identity(run)
    config, task = identity["config"], identity["task"]
    points = _test_points(run, read_metrics_csv(run / "metrics.csv"), task)
    if points is None:
        return None
    select = select_override or config.get("eval", {}).get("select", "best")
    if select == "final":
        how, at = "final", "final"
    else:
        how, at = ("best (val)", "best") if points["best_metrics"] is not None else ("final (no val)", "final")
    return {**identity, "select": how, "step": points[f"{at}_step"], "metrics": points[f"{at}_metrics"], **points}


def method_label(config: Dict[str, Any]) -> str:
    """The row name of a run: its method, followed by the keys of the method's own settings block that differ
    from ``configs/base.yaml`` (the paper's defaults), e.g. ``fixmatch (fixmatch.teacher=ema,
    fixmatch.unsup_rampup=0.1)`` for FixMatch with Hermes' teacher and ramp. ``config`` is completed
    (:func:`Code.engine.config.complete_saved_config`), so a run saved before a block existed is named by what it
    ran with."""
    method = config.get("method", "?")
    own, published = config.get(method), load_config(None, []).get(method)
    if not isinstance(own, dict) or not isinstance(published, dict):
        return method
    changed = [f"{method}.{k}={own[k]}" for k in sorted(own) if k in published and own[k] != published[k]]
    return f"{method} ({', '.join(changed)})" if changed else method


POOLING_IGNORES = ("seed", "device", "log", "data.num_workers")  # keys in which seeds of one experiment may differ


def flat_config(config: Dict[str, Any], prefix: str = "") -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            out.update(flat_config(value, f"{prefix}{key}."))
        elif not any(f"{prefix}{key}" == k or f"{prefix}{key}".startswith(k + ".") for k in POOLING_IGNORES):
            out[f"{prefix}{key}"] = value
    return out


def differing_keys(flats: List[Dict[str, Any]]) -> List[str]:
    """The sorted keys of flattened configs (:func:`flat_config`) in which any two of them differ."""
    return sorted({k for f in flats for k in f if any(g.get(k) != f.get(k) for g in flats)})


def template_seed(results: List[Dict[str, Any]], keys: Sequence[str]) -> None:
    """For each dotted config key in ``keys`` (e.g. ``model.encoder_weights``), write the run's own seed in a string
    value as ``{seed}`` (as a whole number: seed 1 turns ``busi64_s1/encoder.pth`` into ``busi64_s{seed}/…`` but
    leaves ``busi64`` alone), so that seeds whose configs name a per-seed file pool into one row. In place; a key
    that no run has is a UserError (a typo would otherwise pool nothing, silently)."""
    found = set()
    for r in results:
        seed = r["config"].get("seed")
        for key in keys:
            *parents, leaf = key.split(".")
            node = r["config"]
            for part in parents:
                node = node.get(part) if isinstance(node, dict) else None
            if not isinstance(node, dict) or leaf not in node:
                continue
            found.add(key)
            if isinstance(node[leaf], str) and seed is not None:
                node[leaf] = re.sub(rf"(?<![0-9]){int(seed)}(?![0-9])", "{seed}", node[leaf])
    missing = [k for k in keys if k not in found]
    if missing:
        raise UserError(f"--per-seed {', '.join(missing)}: no run's config.yaml has this key")


def split_config_variants(results: List[Dict[str, Any]]) -> List[str]:
    """Runs of one cell (method, dataset, label budget) are pooled as seeds only if their configs agree in all but
    ``POOLING_IGNORES``; otherwise each config becomes its own row, ``method (key=value, ...)`` named by every key
    that tells them apart (a shortened name could give two configs one row, pooled as seeds). Renames
    ``results[i]["method"]`` in place; returns one note per split cell."""
    cells: Dict[Tuple[str, str, Any, str], List[Dict[str, Any]]] = defaultdict(list)
    for r in results:  # the task is part of the cell: seg and cls runs feed different tables
        cells[(r["method"], r["dataset"], r["labels"], r["task"])].append(r)
    notes = []
    for (method, dataset, labels, task), runs in cells.items():
        flats = [flat_config(r["config"]) for r in runs]
        keys = differing_keys(flats)
        if not keys:
            continue
        for r, f in zip(runs, flats):
            r["method"] = f"{method} ({', '.join(f'{k}={f.get(k)}' for k in keys)})"
        notes.append(f"{task} runs of {method}, {dataset} {labels} labels have different configs (differ in: "
                     f"{', '.join(keys)}); reported as separate rows, not pooled as seeds")
    return notes


def refuse_repeated_seeds(results: List[Dict[str, Any]]) -> None:
    """Two runs of one row (after :func:`split_config_variants`) with the same seed are the same experiment twice,
    not two seeds: a UserError naming both folders."""
    seen: Dict[Tuple[Any, ...], Path] = {}
    for r in results:
        key = (r["method"], r["dataset"], r["labels"], r["task"], r["seed"])
        if key in seen:
            raise UserError(f"{seen[key]} and {r['run']} are the same experiment with the same seed "
                            f"({r['method']}, seed {r['seed']}); report one of them, not both as seeds")
        seen[key] = r["run"]


def settings_beyond_method(results: List[Dict[str, Any]]) -> str:
    """Markdown lines naming, per entry (task) and method row, the config keys in which its runs differ from the
    supervised-only runs of the same entry (``method`` itself aside): the settings a table row ran with beyond the
    method, e.g. a ``--set ssl.prior_aware=true`` given to the Hermes runs only. Compared are the values that all
    runs of a row share; '' when no row differs or an entry has no supervised-only runs."""
    rows: Dict[Tuple[str, str], List[Dict[str, Any]]] = defaultdict(list)
    for r in results:
        rows[(r["task"], r["method"])].append(flat_config(r["config"]))

    def shared(flats: List[Dict[str, Any]]) -> Dict[str, Any]:
        return {k: v for k, v in flats[0].items() if k != "method" and all(k in f and f[k] == v for f in flats)}

    lines = []
    for (task, method), flats in sorted(rows.items(), key=lambda item: (item[0][0], method_key(item[0][1]))):
        if method == "supervised" or (task, "supervised") not in rows:
            continue
        base, own = shared(rows[(task, "supervised")]), shared(flats)
        keys = sorted(k for k in set(base) | set(own) if base.get(k) != own.get(k))
        if keys:
            lines.append(f"- `{task}` {method}: " + ", ".join(f"{k}={own.get(k, '(unset)')}" for k in keys))
    if not lines:
        return ""
    return ("**Settings beyond the method** (config keys in which a row's runs differ from the supervised-only "
            "runs of the same entry):\n\n" + "\n".join(lines))


def method_order() -> Tuple[str, ...]:
    """Table rows: supervised-only first, Hermes last, the other registered methods between them."""
    from Code.methods import method_names

    others = [m for m in method_names() if m not in ("supervised", "hermes")]
    return ("supervised", *others, "hermes")


def method_key(method: str) -> Tuple[int, str]:
    order = method_order()
    base = method.split(" (")[0]  # a config variant "hermes (train.iters=400)" sorts with its method
    return (order.index(base), method) if base in order else (len(order), method)
