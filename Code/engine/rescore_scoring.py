"""Scoring a finished run's two sets of weights again (Code/engine/rescore.py): test and val records of the final
weights and of the val-chosen step, with ``eval.prior_correction`` applied as the trainer applies it after its last
step (Code/engine/prior_correction.py), and the ``final_metrics.json`` content (Code/engine/sealed_test.py)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import torch

from Code.common.checkpoint import clean_state_dict
from Code.engine import prior_correction, sealed_test
from Code.engine.data import build_eval_loader, has_val, resolve_split
from Code.engine.distributed import DistInfo
from Code.engine.runtime import amp_dtype
from Code.errors import UserError
from Code.inference.metrics import summarize_metrics
from Code.inference.prediction import evaluate_model


def _device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for but CUDA is not available (use --device cpu or auto)")
    return torch.device("cuda" if name in ("auto", "cuda") and torch.cuda.is_available() else "cpu")


class _Scorer:
    """The model of a run on one device, its split's test and val loaders and its labeled prior."""

    def __init__(self, run: Path, config: Dict[str, Any], device: torch.device):
        from Code.inference.loading import load_model_from_checkpoint

        self.config, self.device = config, device
        self.split, self.labels = resolve_split(config)
        self.model, _, self.step = load_model_from_checkpoint(run / "checkpoints" / "latest.pt", device)
        self.amp = amp_dtype(config, device) is not None
        self.test = build_eval_loader(config, self.split, DistInfo(), "test")
        self.val = build_eval_loader(config, self.split, DistInfo(), "val") if has_val(self.split) else None
        self.source = prior_correction.labeled_prior(self.split, self.labels)

    def records(self, loader) -> List[Dict[str, Any]]:
        return sorted(evaluate_model(self.model, loader, self.device, self.amp), key=lambda r: r["name"])

    def score(self) -> Tuple[list, Optional[list], Optional[Dict[str, Any]]]:
        """Test records, val records and the correction's note (None without it) of the current weights."""
        pool = lambda: prior_correction.pool_posteriors(self.model, self.split, self.labels,  # noqa: E731
                                                        self.config, self.device, self.amp)
        return prior_correction.sealed_scores(self.records, self.test, self.val, pool, self.config, self.source,
                                              val_always=True)


def score_run(run: Path, config: Dict[str, Any], final: Dict[str, Any], device_name: str
              ) -> Tuple[Dict[str, Any], list, Optional[list], Dict[str, Optional[list]]]:
    """``(final_metrics.json content, final test records, best test records or None, {"final", "best"}: val
    records or None)`` of ``run`` scored with ``config``'s eval settings; ``final`` is the run's own
    ``final_metrics.json`` (its step and val-chosen step)."""
    scorer = _Scorer(Path(run), config, _device(device_name))
    if scorer.step != final.get("step"):
        raise UserError(f"{run}/checkpoints/latest.pt is at step {scorer.step} but its final_metrics.json belongs to "
                        f"step {final.get('step')}: finish the run's training first")
    final_records, val_final_records, final_note = scorer.score()
    val_final = summarize_metrics(val_final_records) if val_final_records is not None else None
    best, best_records, best_note, val_best_records = None, None, None, None
    if final.get("best_val_step") is not None:
        step = int(final["best_val_step"])
        weights = sealed_test.load_best_weights(Path(run) / "checkpoints" / "best.pt", step)
        scorer.model.load_state_dict(clean_state_dict(weights))
        best_records, val_best_records, best_note = scorer.score()
        best = {"step": step, "val": summarize_metrics(val_best_records) if val_best_records is not None else None}
    result = sealed_test.build_result(scorer.step, scorer.val is not None, bool(final.get("test_curves")),
                                      summarize_metrics(final_records), val_final, best,
                                      summarize_metrics(best_records) if best_records is not None else None)
    if final_note is not None:
        result["prior_correction"] = prior_correction.describe(config, scorer.source, final_note, best_note)
    return result, final_records, best_records, {"final": val_final_records, "best": val_best_records}
