"""Per-image val predictions for runs that finished before the trainer wrote them (``val_predictions_final.csv``,
``val_predictions_best.csv``; columns as the test CSVs, Code/engine/sealed_test.py).

    python -m Code.engine.val_predictions RUN [RUN ...] [--device auto|cpu|cuda]

Each RUN must be a finished training run with its checkpoints: ``checkpoints/latest.pt`` (checked to be at the
step of ``final_metrics.json``) gives the final CSV, ``checkpoints/best.pt`` (checked to be the val-chosen step)
the best one. Only ``val/`` is scored, never test. A CSV that exists is left as it is (named on stderr); a run
scored with ``eval.prior_correction: pool`` is refused (its val must be corrected as its test was:
``Code/rescore.py`` writes both).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import List, Optional, Sequence

from Code.errors import UserError, run_cli


def write_for_run(run: Path, device_name: str = "auto") -> List[Path]:
    """Score ``run``'s final and val-chosen weights on val and write the missing CSVs; returns the files written."""
    from Code.common.checkpoint import clean_state_dict
    from Code.engine import prior_correction, sealed_test
    from Code.engine.data import build_eval_loader, has_val, resolve_split
    from Code.engine.distributed import DistInfo
    from Code.engine.rescore import read_finished_run
    from Code.engine.rescore_scoring import _device
    from Code.engine.runtime import amp_dtype
    from Code.inference.loading import load_model_from_checkpoint
    from Code.inference.prediction import evaluate_model

    run = Path(run)
    found = read_finished_run(run)
    config, final = found["config"], found["final"]
    if prior_correction.wanted(config):
        raise UserError(f"{run} was scored with eval.prior_correction: pool; its val must be corrected as its test "
                        f"was: re-score it with Code/rescore.py, which writes both")
    split, _ = resolve_split(config)
    if not has_val(split):
        raise UserError(f"{run}: its split {split} has no val/ part")
    todo = {which: run / name for which, name in sealed_test.VAL_PREDICTION_FILES.items()
            if which == "final" or final.get("best_val_step") is not None}
    for which, path in list(todo.items()):
        if path.exists():
            print(f"note: {path} exists; left as it is", file=sys.stderr)
            del todo[which]
    if not todo:
        return []
    device = _device(device_name)
    model, _, step = load_model_from_checkpoint(run / "checkpoints" / "latest.pt", device)
    if step != final.get("step"):
        raise UserError(f"{run}/checkpoints/latest.pt is at step {step} but final_metrics.json belongs to step "
                        f"{final.get('step')}")
    loader = build_eval_loader(config, split, DistInfo(), "val")
    amp = amp_dtype(config, device) is not None
    written = []
    for which in ("final", "best"):
        if which not in todo:
            continue
        if which == "best":
            weights = sealed_test.load_best_weights(run / "checkpoints" / "best.pt", int(final["best_val_step"]))
            model.load_state_dict(clean_state_dict(weights))
        sealed_test.write_predictions(todo[which], evaluate_model(model, loader, device, amp))
        written.append(todo[which])
    return written


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="Write the per-image val CSVs of finished runs (val only).")
    parser.add_argument("runs", nargs="+", help="finished training run folders (with checkpoints/)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    args = parser.parse_args(argv)
    for run in args.runs:
        for path in write_for_run(Path(run), args.device):
            print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    run_cli(main)
