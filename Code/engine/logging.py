"""Run outputs on rank 0: TensorBoard scalars and images, ``metrics.csv``, and scalar averaging without host syncs."""
from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Dict, Iterable, Optional

import torch
from torch.utils.tensorboard import SummaryWriter

Tensor = torch.Tensor


class ScalarWindow:
    """Sums 0-dim (or per-class 1-dim) tensors on their device; ``means()`` syncs once per logging interval."""

    def __init__(self) -> None:
        self.sums: Dict[str, Tensor] = {}
        self.counts: Dict[str, int] = {}

    def add(self, values: Dict[str, Tensor]) -> None:
        for key, value in values.items():
            value = value.detach().float()
            self.sums[key] = self.sums[key] + value if key in self.sums else value.clone()
            self.counts[key] = self.counts.get(key, 0) + 1

    def means(self) -> Dict[str, float]:
        """Window averages as floats; a per-class vector ``v`` under ``key`` becomes ``key/0``, ``key/1``…"""
        if not self.sums:
            return {}
        keys = list(self.sums)
        flat = torch.cat([self.sums[k].reshape(-1) / self.counts[k] for k in keys]).cpu().tolist()
        result, pos = {}, 0
        for key in keys:
            n = self.sums[key].numel()
            if self.sums[key].dim() == 0:
                result[key] = flat[pos]
            else:
                result.update({f"{key}/{i}": flat[pos + i] for i in range(n)})
            pos += n
        self.sums.clear()
        self.counts.clear()
        return result


def _scalar_tag(key: str) -> str:
    head = key.split("/")[0]
    group = "loss" if head.endswith(("_sup", "_unsup", "_contrast")) or head in ("consistency", "total") else "ssl"
    return f"{group}/{key}"


class RunLogger:
    """TensorBoard writer and ``metrics.csv`` of one run; a no-op object on ranks other than 0."""

    def __init__(self, run_dir: Path, metric_keys: Iterable[str], enabled: bool = True, val_keys: Iterable[str] = ()):
        self.enabled = enabled
        self.metric_keys = list(metric_keys)
        self.val_keys = list(val_keys)
        self.csv_path = Path(run_dir) / "metrics.csv"
        self.tb_dir = Path(run_dir) / "tensorboard"
        self.writer: Optional[SummaryWriter] = SummaryWriter(str(self.tb_dir)) if enabled else None

    def purge_after(self, step: int) -> None:
        """On resume from a checkpoint at ``step``: reopen TensorBoard so that events logged after it (by a run
        killed before its next checkpoint) are hidden, as ``metrics.csv`` rows past it are dropped."""
        if self.writer:
            self.writer.close()
            self.writer = SummaryWriter(str(self.tb_dir), purge_step=step + 1)

    def scalars(self, values: Dict[str, float], step: int) -> None:
        if not self.writer:
            return
        for key, value in values.items():
            tag = key if "/" in key and key.split("/")[0] in ("lr", "bank", "eval", "val", "pseudo") else _scalar_tag(key)
            if isinstance(value, float) and math.isnan(value):
                continue
            self.writer.add_scalar(tag, value, step)

    def metrics(self, metrics: Dict[str, float], step: int, val: Optional[Dict[str, float]] = None) -> None:
        """Append one evaluation to ``metrics.csv`` (header on first write): ``step``, then the ``metric_keys``
        under their names (the trainer's test metrics, only with ``eval.test_curves``; none by default), then the
        ``val_keys`` as ``val_<name>`` (``nan`` without ``val``); TensorBoard gets ``metrics`` under ``eval/`` and
        ``val`` under ``val/``."""
        if not self.enabled:
            return
        new = not self.csv_path.exists()
        val_values = [f"{val[k]:.6f}" for k in self.val_keys] if val is not None else ["nan"] * len(self.val_keys)
        with self.csv_path.open("a", newline="") as handle:
            writer = csv.writer(handle)
            if new:
                writer.writerow(["step", *self.metric_keys, *(f"val_{k}" for k in self.val_keys)])
            writer.writerow([step, *(f"{metrics[k]:.6f}" for k in self.metric_keys), *val_values])
        for prefix, values in (("eval", {k: metrics[k] for k in self.metric_keys}), ("val", val or {})):
            for key, value in values.items():
                if not math.isnan(value):
                    self.writer.add_scalar(f"{prefix}/{key}", value, step)

    def images(self, vis: Dict[str, Optional[Tensor]], step: int, max_images: int = 4) -> None:
        """Input, weak-view pseudo-label, keep mask, entropy, saliency, prediction and ground truth (first images)."""
        if not self.writer or not vis:
            return
        from Code.data import denormalize

        def add(tag: str, img: Tensor) -> None:  # img: N×H×W or N×1×H×W in [0, 1]
            img = img.detach().float().cpu()[:max_images]
            self.writer.add_images(f"images/{tag}", img if img.dim() == 4 else img.unsqueeze(1), step)

        add("input", denormalize(vis["input"][:, :1]).clamp(0, 1))
        for key in ("pseudo", "keep", "gt"):
            if vis.get(key) is not None:
                add(key, vis[key].float())
        if vis.get("seg_probs") is not None:
            probs = vis["seg_probs"]
            add("entropy", -(probs * probs.clamp_min(1e-8).log()).sum(1) / math.log(probs.shape[1]))
        if vis.get("pred_logits") is not None:
            add("prediction", vis["pred_logits"].argmax(1).float())
        if vis.get("saliency") is not None:
            add("saliency", vis["saliency"].float().clamp(0, 1))

    def close(self) -> None:
        if self.writer:
            self.writer.close()
