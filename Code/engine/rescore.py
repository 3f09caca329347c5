"""Re-score a **finished** training run into a new run folder with other evaluation settings, without training.

    python Code/rescore.py RUN --out NEW_RUN --set eval.prior_correction=pool [--force] [--device auto]

The same model is scored again: the final weights (``RUN/checkpoints/latest.pt``) and the weights of the step that
the original run chose on val during training (``RUN/checkpoints/best.pt``, checked against ``final_metrics.json``
``best_val_step``) — the correction is applied at test time to the same model, and the val-chosen step is not
chosen again. Only ``eval.*`` keys may change (``eval.every`` and ``eval.test_curves`` describe the training and may
not); also ``ssl.prior_max_shift`` when the run trained without the pool prior (it then bounds only the test-time
correction). NEW_RUN is written like a trained run, so that ``report.py`` reads it as one more row (named by the
changed keys): ``config.yaml`` (the run's saved config with the changes, a ``# rescored_from`` comment on top),
``metrics.csv`` (copied: the training's val curve), ``pseudo_labels.csv`` (copied when present),
``final_metrics.json`` (with ``rescored_from``), ``test_predictions_{final,best}.csv`` and
``val_predictions_{final,best}.csv``. No checkpoints are
copied: a rescored folder is not a run to continue (the trainers refuse it as --out). NEW_RUN follows the output
rule (Code/outputs.py): new or empty, or with ``--force`` an earlier output of rescore.py.
"""
from __future__ import annotations

import argparse
import copy
import json
import shutil
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import yaml

from Code.engine.config import _merge_into, complete_saved_config, dump_config, parse_set_option, validate_config
from Code.engine.run_folder import flat_keys
from Code.errors import UserError

SCRIPT = "rescore.py"
FIXED_EVAL_KEYS = ("eval.every", "eval.test_curves")  # they describe the training, which is not repeated
COPIED = ("metrics.csv", "pseudo_labels.csv")


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    from Code.outputs import FORCE_HELP

    parser = argparse.ArgumentParser(description="Re-score a finished run with other eval.* settings (no training).")
    parser.add_argument("run", help="the finished run folder (config.yaml, checkpoints/, final_metrics.json)")
    parser.add_argument("--out", required=True, help="the new run folder to write")
    parser.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE",
                        help="eval.* settings to change, e.g. eval.prior_correction=pool")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--force", action="store_true", help=FORCE_HELP)
    return parser.parse_args(argv)


def uses_pool_prior(config: Dict[str, Any]) -> bool:
    """Whether training used the pool prior (then ``ssl.prior_max_shift`` shaped the weights and is fixed)."""
    ssl = config["ssl"]
    return config["method"] != "supervised" and (ssl["prior_aware"] or ssl["class_ratio"] == "pool")


def check_changes(keys: Sequence[str], config: Dict[str, Any]) -> None:
    """UserError naming the first key that a re-scoring cannot change."""
    for key in sorted(keys):
        if key == "ssl.prior_max_shift" and not uses_pool_prior(config):
            continue
        if not key.startswith("eval.") or key in FIXED_EVAL_KEYS:
            raise UserError(f"--set {key}: rescore.py changes only how the trained model is scored (eval.* keys "
                            f"other than {', '.join(FIXED_EVAL_KEYS)}); {key} needs a new training run")


def read_finished_run(run: Path) -> Dict[str, Any]:
    """``{"raw": saved config as written, "config": completed, "final": final_metrics.json}`` of a finished run."""
    from Code.engine.sealed_test import FINAL_METRICS

    path = run / "config.yaml"
    try:
        raw = yaml.safe_load(path.read_text()) if path.is_file() else None
    except yaml.YAMLError:
        raw = None
    if not (isinstance(raw, dict) and raw.get("task") in ("seg", "cls")):
        raise UserError(f"{run} is not a training run folder (no config.yaml of seg_train.py or cls_train.py)")
    if not (run / "checkpoints" / "latest.pt").is_file():
        raise UserError(f"{run} has no checkpoints/latest.pt: only a finished training run can be re-scored")
    try:
        final = json.loads((run / FINAL_METRICS).read_text())
    except (OSError, ValueError):
        final = None
    if not isinstance(final, dict) or not final.get("test_at_final"):
        raise UserError(f"{run} is not finished (no {FINAL_METRICS}): finish its training first")
    return {"raw": raw, "config": complete_saved_config(raw), "final": final}


def apply_changes(config: Dict[str, Any], changes: List[Dict[str, Any]]) -> Dict[str, Any]:
    """``config`` with the ``--set`` changes merged in (types and values validated as for training)."""
    changed = copy.deepcopy(config)
    for change in changes:
        _merge_into(changed, change, validate=True)
    validate_config(changed)
    return changed


def write_config(out: Path, raw: Dict[str, Any], changes: List[Dict[str, Any]], run: Path) -> None:
    """The run's saved config (as written, so report.py sees only the changed keys differ) with the changes."""
    merged = copy.deepcopy(raw)
    for change in changes:
        _merge_into(merged, change, validate=False)
    header = f"# rescored_from: {run.resolve()} (Code/rescore.py: same weights, other eval settings)\n"
    (out / "config.yaml").write_text(header + dump_config(merged))


def main(argv: Optional[Sequence[str]] = None) -> int:
    from Code.engine.rescore_scoring import score_run
    from Code.outputs import prepare_output_folder

    args = parse_args(argv)
    run, out = Path(args.run), Path(args.out)
    if out.resolve() == run.resolve():
        raise UserError(f"--out {out} is the run to re-score; write the re-scored run into a new folder")
    found = read_finished_run(run)
    changes = [parse_set_option(item) for item in args.set]
    check_changes(flat_keys(changes), found["config"])
    config = apply_changes(found["config"], changes)
    out = prepare_output_folder(out, SCRIPT, args.force, [(run, f"the run {run}")])
    start = time.monotonic()
    result, final_records, best_records, val_records = score_run(run, config, found["final"], args.device)
    result["train_seconds"] = found["final"].get("train_seconds")
    result["rescored_from"] = str(run.resolve())
    result["rescore_seconds"] = round(time.monotonic() - start, 1)
    from Code.engine.sealed_test import write_outputs

    for name in COPIED:
        if (run / name).is_file():
            shutil.copy2(run / name, out / name)
    write_config(out, found["raw"], changes, run)
    write_outputs(out, result, final_records, best_records, val_records["final"], val_records["best"])
    print(f"re-scored {run} into {out} (test at the final step: accuracy "
          f"{100 * result['test_at_final']['accuracy']:.2f} %, balanced accuracy "
          f"{100 * result['test_at_final']['balanced_accuracy']:.2f} %)")
    return 0
