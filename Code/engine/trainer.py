"""The training loop shared by ``seg_train.py`` and ``cls_train.py`` (DESIGN §4).

The unlabeled stream drives the iterations; the labeled stream is re-iterated with fresh augmentations. Loss terms
are summed on the device and read back only every ``log.every`` steps, which is also when non-finite losses are
detected. Every ``eval.every`` steps (and after the last one) the val and test parts are evaluated,
``metrics.csv`` gets a row (test metrics under their names, val metrics as ``val_<name>``) and
``checkpoints/latest.pt`` is written atomically, plus ``best.pt`` when the **val** score improves (never chosen on
test; a split without ``val/`` has no ``best.pt``). ``final_metrics.json`` holds ``test_at_final`` and
``test_at_best_val`` (with the steps and the val metrics behind them).
"""
from __future__ import annotations

import json
import math
import sys
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Dict, Optional

import torch
import torch.distributed as torch_dist
from tqdm import tqdm

from Code.engine import evaluation
from Code.engine.builders import build_model, build_optimizers
from Code.engine.checkpoint import clean_state_dict, save_checkpoint
from Code.engine.data import build_eval_loader, build_streams, has_val, resolve_split
from Code.engine.diagnostics import PseudoLabelMonitor
from Code.engine.distributed import DistInfo, all_gather_objects, barrier, unwrap
from Code.engine.logging import RunLogger, ScalarWindow
from Code.engine.step import StepContext, train_step
from Code.engine.runtime import amp_dtype, apply_gradients, rng_state, seed_everything, set_rng_state, to_device
from Code.engine.teacher import build_teacher
from Code.errors import UserError


class Trainer:
    """Owns the model, optimisers, streams, memory banks and run outputs of one run."""

    def __init__(self, config: Dict[str, Any], run_dir: Path, device: torch.device, dist: DistInfo = DistInfo()):
        self.config, self.run_dir, self.device, self.dist = config, Path(run_dir), device, dist
        train = config["train"]
        seed_everything(config["seed"] + dist.rank)
        if train["deterministic"]:
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.benchmark = False
        elif device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        self.split, self.labels = resolve_split(config)
        self.channels_last = device.type == "cuda" and train["channels_last"]
        self.model = self._build_model()
        self.seg_opt, self.cls_opt = build_optimizers(unwrap(self.model), config)
        total, power = train["iters"], train["poly_power"]
        poly = lambda t: max(0.0, 1.0 - t / total) ** power  # noqa: E731
        self.schedulers = [torch.optim.lr_scheduler.LambdaLR(opt, poly) for opt in (self.seg_opt, self.cls_opt)]
        self.amp_dtype = amp_dtype(config, device)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        self.teacher = build_teacher(config, unwrap(self.model))
        pin = device.type == "cuda"
        self.labeled_stream, self.unlabeled_stream = build_streams(config, self.split, self.labels, dist, pin)
        labels = torch.tensor(self.labeled_stream.dataset.labels, dtype=torch.long)
        self.ctx = StepContext.build(config, device, torch.bincount(labels, minlength=2).float() / max(len(labels), 1))
        self.eval_loader = build_eval_loader(config, self.split, dist)
        self.val_loader = build_eval_loader(config, self.split, dist, "val") if has_val(self.split) else None
        if self.val_loader is None and dist.is_main:
            print(f"note: {self.split} has no val/ part (data_split.py --val-ratio): no best.pt is chosen, "
                  f"test is reported at the final step only", file=sys.stderr)
        self.logger = RunLogger(self.run_dir, evaluation.METRIC_KEYS, enabled=dist.is_main,
                                val_keys=evaluation.METRIC_KEYS if self.val_loader is not None else ())
        truth = self.unlabeled_stream is not None and self.unlabeled_stream.dataset.has_truth
        self.monitor = PseudoLabelMonitor(self.run_dir, enabled=dist.is_main) if truth else None
        self.window = ScalarWindow()
        self.first_bad: Dict[str, torch.Tensor] = {}
        self.step, self.best, self.last_metrics, self.last_val = 0, None, None, None
        self.stop_requested = False  # set by a signal handler (cli): save latest.pt after this step and stop

    def _build_model(self) -> torch.nn.Module:
        model = build_model(self.config).to(self.device)
        if self.config["ssl"]["teacher"] == "ema" and self.dist.enabled and self.config["train"]["sync_bn"]:
            raise UserError("ssl.teacher 'ema' with train.sync_bn is not supported; use teacher 'joint'")
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        if self.dist.enabled:
            if self.config["train"]["sync_bn"]:
                model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
            ids = [self.dist.local_rank] if self.device.type == "cuda" else None
            model = torch.nn.parallel.DistributedDataParallel(model, device_ids=ids, find_unused_parameters=True)
        if self.config["train"]["compile"]:
            model = torch.compile(model)
        return model

    # ----------------------------------------------------------------------------------------------- state
    def state_dict(self, rngs: Optional[list] = None) -> Dict[str, Any]:
        """Everything a resumed run needs; ``rngs`` holds every rank's RNG states (default: this process's)."""
        streams = {"labeled": self.labeled_stream.state_dict()}
        if self.unlabeled_stream is not None:
            streams["unlabeled"] = self.unlabeled_stream.state_dict()
        return {"step": self.step, "config": self.config, "model": unwrap(self.model).state_dict(),
                "seg_optimizer": self.seg_opt.state_dict(), "cls_optimizer": self.cls_opt.state_dict(),
                "schedulers": [s.state_dict() for s in self.schedulers], "scaler": self.scaler.state_dict(),
                "banks": self.ctx.banks.state_dict(), "streams": streams, "rng": rngs if rngs is not None else [rng_state()],
                "best": self.best, "last_metrics": self.last_metrics, "last_val": self.last_val,
                "teacher": None if self.teacher is None else self.teacher.state_dict(),
                "pool_prior": None if self.ctx.pool_prior is None else self.ctx.pool_prior.state_dict()}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        unwrap(self.model).load_state_dict(clean_state_dict(state["model"]))
        self.seg_opt.load_state_dict(state["seg_optimizer"])
        self.cls_opt.load_state_dict(state["cls_optimizer"])
        for sched, sched_state in zip(self.schedulers, state["schedulers"]):
            sched.load_state_dict(sched_state)
        self.scaler.load_state_dict(state["scaler"])
        self.ctx.banks.load_state_dict(state["banks"])
        if self.teacher is not None:
            if state.get("teacher") is None:
                raise UserError("the checkpoint has no EMA teacher (it was saved with another ssl.teacher)")
            self.teacher.load_state_dict(state["teacher"])
        if self.ctx.pool_prior is not None and state.get("pool_prior") is not None:
            self.ctx.pool_prior.load_state_dict(state["pool_prior"])
        self.labeled_stream.load_state_dict(state["streams"]["labeled"])
        if self.unlabeled_stream is not None and "unlabeled" in state["streams"]:
            self.unlabeled_stream.load_state_dict(state["streams"]["unlabeled"])
        if len(state["rng"]) == self.dist.world_size:
            set_rng_state(state["rng"][self.dist.rank])
        else:  # saved with another number of processes: continue reproducibly, though not bit-exactly
            seed_everything(self.config["seed"] + self.dist.rank + 1000003 * state["step"])
        self.step, self.best, self.last_metrics = state["step"], state["best"], state["last_metrics"]
        self.last_val = state.get("last_val")
        if self.dist.is_main and self.monitor is not None:  # rows past this checkpoint are rewritten
            self.monitor.truncate_after(self.step)           # (metrics.csv: run_folder.truncate_metrics)

    # ----------------------------------------------------------------------------------------------- loop
    def fit(self, stop_after: Optional[int] = None) -> Dict[str, Any]:
        """Train to ``train.iters`` (or save and stop at ``stop_after``); return the final and best evaluations."""
        total = self.config["train"]["iters"]
        log_every, image_every = self.config["log"]["every"], self.config["log"]["image_every"]
        eval_every = self.config["eval"]["every"]
        bar = tqdm(total=total, initial=self.step, disable=not self.dist.is_main, dynamic_ncols=True, desc="train")
        self.model.train()
        while self.step < total:
            vis = self._train_one_step()
            self.step += 1
            bar.update(1)
            if self.step % log_every == 0 or self.step == total:
                bar.set_postfix(self._log_scalars(), refresh=False)
            if self.dist.is_main and image_every > 0 and self.step % image_every == 0:
                self.logger.images(vis, self.step)
            if self.step % eval_every == 0 or self.step == total:
                self._evaluate_and_save()
            wants_stop = self.stop_requested or (stop_after is not None and self.step >= stop_after)
            if wants_stop and self.step < total:
                bar.close()
                return self._stop()
        bar.close()
        if self.last_metrics is None or self.last_metrics["step"] != self.step:
            self._evaluate_and_save()
        result = self.final_result()
        if self.dist.is_main:
            (self.run_dir / "final_metrics.json").write_text(json.dumps(result, indent=2))
        self.logger.close()
        return result

    def close(self) -> None:
        """Shut the training streams' loader workers down (the cli calls it however ``fit`` ends)."""
        for stream in (self.labeled_stream, self.unlabeled_stream):
            if stream is not None:
                stream.close()

    def final_result(self) -> Dict[str, Any]:
        """``final_metrics.json``: test at the final step and at the val-chosen step (None without val/)."""
        best = self.best
        return {"step": self.step, "selection": "val" if self.val_loader is not None else "none (no val/ part)",
                "test_at_final": self.last_metrics, "val_at_final": self.last_val,
                "best_val_step": None if best is None else best["step"],
                "test_at_best_val": None if best is None else dict(best["metrics"], step=best["step"]),
                "val_at_best": None if best is None else best["val"]}

    def _stop(self) -> Dict[str, Any]:
        """Save ``latest.pt`` mid-run (no evaluation, so the resumed run's outputs equal an uninterrupted one's)."""
        self._check_finite()
        rngs = all_gather_objects(rng_state())
        if self.dist.is_main:
            save_checkpoint(self.run_dir / "checkpoints" / "latest.pt", self.state_dict(rngs))
        self.logger.close()
        barrier()
        return {"step": self.step, "stopped": True}

    def _train_one_step(self) -> Dict[str, Any]:
        labeled = to_device(next(self.labeled_stream), self.device, self.channels_last)
        unlabeled, truth = None, None
        if self.unlabeled_stream is not None:
            batch = to_device(next(self.unlabeled_stream), self.device, self.channels_last)
            unlabeled, truth = batch[:2], batch[2:]  # the truth (diagnostics only) never enters train_step
        autocast = (torch.autocast("cuda", dtype=self.amp_dtype) if self.amp_dtype is not None else nullcontext())
        with autocast:
            loss, logs, vis = train_step(self.model, labeled, unlabeled, self.step, self.ctx, self.teacher)
        apply_gradients(loss, self.scaler, (self.seg_opt, self.cls_opt), self.schedulers,
                        self.config["train"]["grad_clip"])
        if self.teacher is not None:
            self.teacher.update(unwrap(self.model), self.step)
        if self.monitor is not None and truth:
            self.monitor.add(vis, *truth)
        logs["total"] = loss.detach()
        self._track_finite(logs)
        self.window.add(logs)
        return vis

    def _track_finite(self, logs: Dict[str, torch.Tensor]) -> None:
        for key, value in logs.items():
            if value.dim() == 0 and (key.endswith(("_sup", "_unsup", "_contrast")) or key in ("consistency", "total")):
                bad = ~torch.isfinite(value)
                prev = self.first_bad.get(key, torch.full((), -1, dtype=torch.long, device=value.device))
                self.first_bad[key] = torch.where(bad & (prev < 0), torch.full_like(prev, self.step), prev)

    def _check_finite(self) -> None:
        if not self.first_bad:
            return
        keys = [k for k in self.first_bad if k != "total"] + ["total"]
        flags = torch.stack([self.first_bad[k] for k in keys if k in self.first_bad])
        if self.dist.enabled:
            torch_dist.all_reduce(flags, op=torch_dist.ReduceOp.MAX)
        flags = flags.cpu().tolist()
        for key, first in zip([k for k in keys if k in self.first_bad], flags):
            if first >= 0:
                latest = self.run_dir / "checkpoints" / "latest.pt"
                kept = f"last good checkpoint kept: {latest}" if latest.exists() else "no checkpoint was written"
                raise UserError(f"non-finite loss term '{key}' at step {first}; training stopped, {kept}")

    def _log_scalars(self) -> Dict[str, str]:
        self._check_finite()
        means = self.window.means()
        for i, opt in enumerate((self.seg_opt, self.cls_opt)):
            means[f"lr/{'seg' if i == 0 else 'cls'}"] = opt.param_groups[0]["lr"]
        for name, bank in self.ctx.banks.items():
            for c, fill in enumerate(bank.filled.tolist()):
                means[f"bank/{name}_fill/{c}"] = fill / bank.queue.shape[1]
        if self.monitor is not None:
            means.update({f"pseudo/{k}": v for k, v in self.monitor.flush(self.step).items()})
        self.logger.scalars(means, self.step)
        postfix = {"loss": f"{means.get('total', float('nan')):.3f}"}
        if self.last_metrics:
            postfix.update(dice=f"{self.last_metrics['dice']:.3f}", acc=f"{self.last_metrics['accuracy']:.3f}")
        return postfix

    # ----------------------------------------------------------------------------------------------- evaluation
    def evaluate(self, loader=None) -> Dict[str, float]:
        """Metrics on the test part (or ``loader``'s); under DDP each rank evaluates a shard, records are gathered."""
        model = unwrap(self.model)
        model.eval()
        records = evaluation.evaluate_model(model, loader if loader is not None else self.eval_loader, self.device,
                                            amp=self.amp_dtype is not None)
        model.train()
        gathered = {r["name"]: r for part in all_gather_objects(records) for r in part}  # drops sampler padding
        return evaluation.summarize_metrics([gathered[name] for name in sorted(gathered)])

    def _evaluate_and_save(self) -> None:
        self._check_finite()
        metrics = self.evaluate()
        val = self.evaluate(self.val_loader) if self.val_loader is not None else None
        self.last_metrics, self.last_val = dict(metrics, step=self.step), val
        improved = False
        if val is not None:  # chosen on val only
            score = evaluation.best_score(val, self.config["task"])
            if self.best is None or score > tuple(self.best["score"]):
                self.best, improved = {"step": self.step, "score": list(score), "metrics": metrics, "val": val}, True
        rngs = all_gather_objects(rng_state())
        if self.dist.is_main:
            self.logger.metrics(metrics, self.step, val)
            state = self.state_dict(rngs)
            save_checkpoint(self.run_dir / "checkpoints" / "latest.pt", state)
            if improved:
                save_checkpoint(self.run_dir / "checkpoints" / "best.pt", state)
        barrier()


def format_metrics(metrics: Dict[str, float]) -> str:
    """One line of test metrics for the console."""
    parts = []
    for key in evaluation.METRIC_KEYS:
        value = metrics.get(key, float("nan"))
        parts.append(f"{key} {'nan' if math.isnan(value) else f'{100 * value:.2f}'}")
    return " | ".join(parts)
