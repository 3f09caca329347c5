"""Pseudo-label diagnostics: how good are the weak view's pseudo-labels, measured against the unlabeled truth.

Used only when the split ships the truth of all its unlabeled images (``train/N/unlabeled/truth.txt``, written by
data_split.py for the pool's train images); a pool with unlabeled-only images (no truth) switches them off, with a
one-line note (Code.engine.data.build_streams). The truth travels beside the unlabeled batch
and reaches only :class:`PseudoLabelMonitor`, never a method's ``step``: the losses cannot see it.

Counts are summed on the device over a logging window (no host sync per step); :meth:`PseudoLabelMonitor.flush`
turns them into ratios (NaN where a denominator is 0), all in [0, 1]:

- ``pseudo/seg_keep``           kept pixels / pixels
- ``pseudo/seg_kept_precision`` kept lesion pixels that are lesion / kept lesion pixels
- ``pseudo/seg_kept_dice``      2·|kept ∧ ŷ=1 ∧ y=1| / (|kept ∧ ŷ=1| + |kept ∧ y=1|)
- ``pseudo/seg_kept_accuracy``  kept pixels whose pseudo-label is right / kept pixels
- ``pseudo/cls_keep``           kept images / images
- ``pseudo/cls_pred_share_1``   images the teacher calls malignant (kept or not) / images
- ``pseudo/cls_kept_share_c``   kept images labelled c / kept images
- ``pseudo/cls_true_share_1``   malignant images / images (the truth of the batches seen)
- ``pseudo/cls_kept_accuracy_c`` kept images labelled c that are c / kept images labelled c
- ``pseudo/cls_accuracy``       images whose pseudo-label (kept or not) is right / images
"""
from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Dict, List, Optional

import torch

Tensor = torch.Tensor


def pseudo_label_counts(vis: Dict[str, Tensor], truth_mask: Tensor, truth_label: Tensor) -> Dict[str, Tensor]:
    """Counts of one step. ``vis``: the third output of a method's ``step`` (``pseudo``/``keep`` B×H×W, ``cls_pseudo``/
    ``cls_keep`` B); ``truth_mask`` B×H×W {0, 1} aligned with the weak view; ``truth_label`` B."""
    pseudo, keep = vis["pseudo"].long(), vis["keep"].bool()
    truth = truth_mask.to(pseudo.device).long()
    if truth.shape != pseudo.shape:  # the model may predict at another resolution than the input
        truth = torch.nn.functional.interpolate(truth[:, None].float(), size=pseudo.shape[-2:],
                                                mode="nearest")[:, 0].long()
    kept_lesion = keep & (pseudo == 1)
    c_pseudo, c_keep = vis["cls_pseudo"].long(), vis["cls_keep"].bool()
    label = truth_label.to(c_pseudo.device).long()
    f = lambda t: t.float().sum()  # noqa: E731
    counts = {
        "pixels": torch.tensor(float(pseudo.numel()), device=pseudo.device), "seg_kept": f(keep),
        "seg_kept_lesion": f(kept_lesion), "seg_kept_lesion_true": f(kept_lesion & (truth == 1)),
        "seg_kept_true_lesion": f(keep & (truth == 1)), "seg_kept_right": f(keep & (pseudo == truth)),
        "images": torch.tensor(float(c_pseudo.numel()), device=c_pseudo.device), "cls_kept": f(c_keep),
        "cls_pred_1": f(c_pseudo == 1), "cls_true_1": f(label == 1), "cls_right": f(c_pseudo == label),
    }
    for c in (0, 1):
        counts[f"cls_kept_{c}"] = f(c_keep & (c_pseudo == c))
        counts[f"cls_kept_right_{c}"] = f(c_keep & (c_pseudo == c) & (label == c))
    return counts


def _ratio(num: float, den: float) -> float:
    return num / den if den > 0 else math.nan


def ratios(sums: Dict[str, float]) -> Dict[str, float]:
    """The diagnostics of the module docstring from summed counts."""
    s = sums
    out = {
        "seg_keep": _ratio(s["seg_kept"], s["pixels"]),
        "seg_kept_precision": _ratio(s["seg_kept_lesion_true"], s["seg_kept_lesion"]),
        "seg_kept_dice": _ratio(2 * s["seg_kept_lesion_true"], s["seg_kept_lesion"] + s["seg_kept_true_lesion"]),
        "seg_kept_accuracy": _ratio(s["seg_kept_right"], s["seg_kept"]),
        "cls_keep": _ratio(s["cls_kept"], s["images"]),
        "cls_pred_share_1": _ratio(s["cls_pred_1"], s["images"]),
        "cls_true_share_1": _ratio(s["cls_true_1"], s["images"]),
        "cls_accuracy": _ratio(s["cls_right"], s["images"]),
    }
    for c in (0, 1):
        out[f"cls_kept_share_{c}"] = _ratio(s[f"cls_kept_{c}"], s["cls_kept"])
        out[f"cls_kept_accuracy_{c}"] = _ratio(s[f"cls_kept_right_{c}"], s[f"cls_kept_{c}"])
    return out


class PseudoLabelMonitor:
    """Sums :func:`pseudo_label_counts` over a window; ``flush`` appends a row to ``pseudo_labels.csv``."""

    KEYS: List[str] = list(ratios({k: 1.0 for k in (
        "pixels", "seg_kept", "seg_kept_lesion", "seg_kept_lesion_true", "seg_kept_true_lesion", "seg_kept_right",
        "images", "cls_kept", "cls_pred_1", "cls_true_1", "cls_right", "cls_kept_0", "cls_kept_1",
        "cls_kept_right_0", "cls_kept_right_1")}))

    def __init__(self, run_dir: Optional[Path], enabled: bool = True):
        self.path = None if run_dir is None else Path(run_dir) / "pseudo_labels.csv"
        self.enabled = enabled
        self.sums: Dict[str, Tensor] = {}

    def add(self, vis: Dict[str, Tensor], truth_mask: Tensor, truth_label: Tensor) -> None:
        for key, value in pseudo_label_counts(vis, truth_mask, truth_label).items():
            self.sums[key] = self.sums[key] + value if key in self.sums else value.clone()

    def flush(self, step: int) -> Dict[str, float]:
        """Ratios of the window (one host sync), appended to the CSV; the window restarts."""
        if not self.sums:
            return {}
        keys = list(self.sums)
        values = torch.stack([self.sums[k] for k in keys]).cpu().tolist()
        self.sums.clear()
        result = ratios(dict(zip(keys, values)))
        if self.enabled and self.path is not None:
            new = not self.path.exists()
            with self.path.open("a", newline="") as handle:
                writer = csv.writer(handle)
                if new:
                    writer.writerow(["step", *self.KEYS])
                writer.writerow([step, *(f"{result[k]:.6f}" for k in self.KEYS)])
        return result

    def truncate_after(self, step: int) -> None:
        """Drop rows past ``step`` (a resumed run rewrites them)."""
        if self.path is None or not self.path.exists():
            return
        with self.path.open(newline="") as handle:
            rows = list(csv.reader(handle))
        kept = rows[:1] + [r for r in rows[1:] if r and int(r[0]) <= step]
        with self.path.open("w", newline="") as handle:
            csv.writer(handle).writerows(kept)
