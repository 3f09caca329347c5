"""The training loop shared by ``seg_train.py`` and ``cls_train.py`` (docs/design.md, "The training step").

The unlabeled stream drives the iterations; the labeled stream is re-iterated with fresh augmentations. Loss terms
are summed on the device and read back only every ``log.every`` steps, which is also when non-finite losses are
detected. Every ``eval.every`` steps (and after the last one) the **val** part is evaluated, ``metrics.csv``
gets a row (``step``, ``val_<name>``; the test metrics under their names only with ``eval.test_curves``) and
``checkpoints/latest.pt`` (the full training state) is written atomically, plus a slim ``best.pt`` (weights,
config, step, val metrics: :func:`Code.common.checkpoint.slim_state`) when the val score improves by the tie rule
of :func:`Code.engine.selection.best_score` (a split without ``val/`` has no ``best.pt``). The test part is sealed:
scored once, after the last step, with the final weights and with ``best.pt``'s (:mod:`Code.engine.sealed_test`:
``final_metrics.json`` and the per-image ``test_predictions_*.csv``; with ``eval.prior_correction: pool`` test and
val corrected to the unlabeled pool's prior, :mod:`Code.engine.prior_correction`); never at a ``--stop-after`` or
signal stop, and not again when a finished run is invoked once more.
"""
from __future__ import annotations

import math
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Dict, Optional

import torch
from tqdm import tqdm

from Code.common.checkpoint import clean_state_dict, save_checkpoint, slim_state
from Code.engine import prior_correction, sealed_test, selection
from Code.engine.builders import add_networks, build_model, build_optimizers
from Code.engine.data import build_eval_loader, build_streams, has_val, resolve_split
from Code.engine.diagnostics import PseudoLabelMonitor
from Code.engine.distributed import DistInfo, all_gather_objects, barrier, unwrap
from Code.engine.finite import NonFiniteWatch
from Code.engine.logging import RunLogger, ScalarWindow
from Code.engine.runtime import amp_dtype, apply_gradients, rng_state, seed_everything, set_rng_state, to_device
from Code.errors import UserError
from Code.inference.metrics import METRIC_KEYS, summarize_metrics
from Code.inference.prediction import evaluate_model
from Code.methods import build_method, method_state, method_teacher


class Trainer:
    """Owns the model, optimisers, streams, the method (with its extra state) and run outputs of one run."""

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
        self.amp_dtype = amp_dtype(config, device)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        pin = device.type == "cuda"
        self.labeled_stream, self.unlabeled_stream = build_streams(config, self.split, self.labels, dist, pin)
        labels = torch.tensor(self.labeled_stream.dataset.labels, dtype=torch.long)
        self.labeled_prior = torch.bincount(labels, minlength=2).float() / max(len(labels), 1)
        self.method = build_method(config, device, unwrap(self.model), self.labeled_prior)  # Code/methods/<method>.py
        add_networks(self.method.extra_networks(), (self.seg_opt, self.cls_opt), self.channels_last)  # e.g. abd's
        total, power = train["iters"], train["poly_power"]
        poly = lambda t: max(0.0, 1.0 - t / total) ** power  # noqa: E731
        self.schedulers = [torch.optim.lr_scheduler.LambdaLR(opt, poly) for opt in (self.seg_opt, self.cls_opt)]
        if prior_correction.wanted(config):
            prior_correction.pool_names(self.split, self.labels)  # refused now, not after the last step
        self.eval_loader = build_eval_loader(config, self.split, dist)
        self.val_loader = build_eval_loader(config, self.split, dist, "val") if has_val(self.split) else None
        if self.val_loader is None and dist.is_main:
            print(f"note: {self.split} has no val/ part (data_split.py --val-ratio): no best.pt is chosen, "
                  f"test is reported at the final step only", file=sys.stderr)
        self.test_curves = bool(config["eval"].get("test_curves", True))  # absent: a run from before the seal had them
        self.logger = RunLogger(self.run_dir, METRIC_KEYS if self.test_curves else (), enabled=dist.is_main,
                                val_keys=METRIC_KEYS)
        truth = self.unlabeled_stream is not None and self.unlabeled_stream.dataset.has_truth
        self.monitor = PseudoLabelMonitor(self.run_dir, enabled=dist.is_main) if truth else None
        self.window = ScalarWindow()
        self.finite = NonFiniteWatch()
        self.step = 0
        self.forget_history()
        self.train_seconds = 0.0  # wall time spent in fit() over all sessions of this run
        self.stop_requested = False  # set by a signal handler (cli): save latest.pt after this step and stop

    def _build_model(self) -> torch.nn.Module:
        model = build_model(self.config).to(self.device)
        if method_teacher(self.config) == "ema" and self.dist.enabled and self.config["train"]["sync_bn"]:
            raise UserError(f"method {self.config['method']} with an EMA teacher and train.sync_bn is not supported; "
                            f"use teacher 'joint' or no sync_bn")
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
    def forget_history(self) -> None:
        """No evaluation yet: no best step, no last val (or test-curve) metrics (a new run, or a fork)."""
        self.best: Optional[Dict[str, Any]] = None  # {"step", "score", "val"} of the val-chosen evaluation
        self.last_val: Optional[Dict[str, float]] = None
        self.last_metrics: Optional[Dict[str, float]] = None  # test metrics of the last evaluation (test_curves)
        self.last_eval_step: Optional[int] = None

    def state_dict(self, rngs: Optional[list] = None) -> Dict[str, Any]:
        """Everything a resumed run needs; ``rngs`` holds every rank's RNG states (default: this process's)."""
        streams = {"labeled": self.labeled_stream.state_dict()}
        if self.unlabeled_stream is not None:
            streams["unlabeled"] = self.unlabeled_stream.state_dict()
        return {"step": self.step, "config": self.config, "model": unwrap(self.model).state_dict(),
                "seg_optimizer": self.seg_opt.state_dict(), "cls_optimizer": self.cls_opt.state_dict(),
                "schedulers": [s.state_dict() for s in self.schedulers], "scaler": self.scaler.state_dict(),
                "method": self.method.state_dict(), "streams": streams,
                "rng": rngs if rngs is not None else [rng_state()],
                "best": self.best, "last_metrics": self.last_metrics, "last_val": self.last_val,
                "last_eval_step": self.last_eval_step, "train_seconds": self._elapsed()}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        unwrap(self.model).load_state_dict(clean_state_dict(state["model"]))
        self.seg_opt.load_state_dict(state["seg_optimizer"])
        self.cls_opt.load_state_dict(state["cls_optimizer"])
        for sched, sched_state in zip(self.schedulers, state["schedulers"]):
            sched.load_state_dict(sched_state)
        self.scaler.load_state_dict(state["scaler"])
        self.method.load_state_dict(method_state(state))  # older checkpoints: banks/teacher/pool_prior at top level
        self.labeled_stream.load_state_dict(state["streams"]["labeled"])
        if self.unlabeled_stream is not None and "unlabeled" in state["streams"]:
            self.unlabeled_stream.load_state_dict(state["streams"]["unlabeled"])
        if len(state["rng"]) == self.dist.world_size:
            set_rng_state(state["rng"][self.dist.rank])
        else:  # saved with another number of processes: continue reproducibly, though not bit-exactly
            seed_everything(self.config["seed"] + self.dist.rank + 1000003 * state["step"])
        self.step, self.best, self.last_metrics = state["step"], state["best"], state["last_metrics"]
        self.last_val = state.get("last_val")
        self.last_eval_step = state.get("last_eval_step", (state["last_metrics"] or {}).get("step"))
        self.train_seconds = float(state.get("train_seconds") or 0.0)
        if self.dist.is_main and self.monitor is not None:  # rows past this checkpoint are rewritten
            self.monitor.truncate_after(self.step)           # (metrics.csv: run_folder.truncate_metrics)

    # ----------------------------------------------------------------------------------------------- loop
    def fit(self, stop_after: Optional[int] = None) -> Dict[str, Any]:
        """Train to ``train.iters`` (or save and stop at ``stop_after``); return the final and best evaluations."""
        total = self.config["train"]["iters"]
        log_every, image_every = self.config["log"]["every"], self.config["log"]["image_every"]
        eval_every = self.config["eval"]["every"]
        self._session_start = time.monotonic()
        bar = tqdm(total=total, initial=self.step, disable=not self.dist.is_main, dynamic_ncols=True, desc="train")
        self.model.train()
        for net in self.method.extra_networks():
            net.train()
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
        if self.last_eval_step != self.step:
            self._evaluate_and_save()
        result = self._score_test_once()
        self.logger.close()
        return result

    def _elapsed(self) -> float:
        """Seconds spent in ``fit`` by this run so far: earlier sessions (saved in checkpoints) plus this one."""
        start = getattr(self, "_session_start", None)
        return self.train_seconds + (time.monotonic() - start if start is not None else 0.0)

    def close(self) -> None:
        """Shut the training streams' loader workers down (the cli calls it however ``fit`` ends)."""
        for stream in (self.labeled_stream, self.unlabeled_stream):
            if stream is not None:
                stream.close()

    def _score_test_once(self) -> Dict[str, Any]:
        """After the last step: score ``test/`` with the final weights and with ``best.pt``'s, write
        ``final_metrics.json`` and the per-image CSVs (rank 0) and return the result; a run whose
        ``final_metrics.json`` already belongs to this step is finished and is not scored again."""
        done = sealed_test.finished_result(self.run_dir, self.step) if self.dist.is_main else None
        done = all_gather_objects(done)[0]  # rank 0's answer for every rank
        if done is not None:
            if self.dist.is_main:
                print(f"note: {self.run_dir} is finished at step {self.step}; test is not scored again "
                      f"(results in {sealed_test.FINAL_METRICS})", file=sys.stderr)
            return done
        final_records, val_final_records, final_note = self._sealed_records()
        val_final = summarize_metrics(val_final_records) if val_final_records is not None else None
        best_records, best, best_note, val_best_records = None, self.best, None, None
        if self.best is not None:
            weights = sealed_test.load_best_weights(self.run_dir / "checkpoints" / "best.pt", self.best["step"])
            with sealed_test.swapped_weights(unwrap(self.model), weights):
                best_records, val_best_records, best_note = self._sealed_records()
            if best_note is not None:
                best = dict(self.best, val=summarize_metrics(val_best_records))
        summarize = summarize_metrics
        result = sealed_test.build_result(self.step, self.val_loader is not None, self.test_curves,
                                          summarize(final_records), val_final if final_note else self.last_val,
                                          best, summarize(best_records) if best_records is not None else None)
        if final_note is not None:
            result["prior_correction"] = prior_correction.describe(self.config, self.labeled_prior, final_note,
                                                                   best_note)
        result["train_seconds"] = round(self._elapsed(), 1)  # training and evaluations, test scoring included
        if self.dist.is_main:
            sealed_test.write_outputs(self.run_dir, result, final_records, best_records,
                                      val_final_records, val_best_records)
        barrier()
        return result

    def _sealed_records(self):
        """The current weights' test and val records (val: the per-image CSVs of an operating threshold chosen on
        val) and, with ``eval.prior_correction: pool``, the pool prior's note (Code/engine/prior_correction.py:
        test and val corrected; else None)."""
        pool = lambda: prior_correction.pool_posteriors(unwrap(self.model), self.split, self.labels,  # noqa: E731
                                                        self.config, self.device, self.amp_dtype is not None)
        return prior_correction.sealed_scores(self.records, self.eval_loader, self.val_loader, pool, self.config,
                                              self.labeled_prior, val_always=True)

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
            views = self.unlabeled_stream.dataset.n_views  # weak + the method's strong views (Method.strong_views)
            unlabeled, truth = batch[:views], batch[views:]  # the truth (diagnostics only) never enters the step
        autocast = (torch.autocast("cuda", dtype=self.amp_dtype) if self.amp_dtype is not None else nullcontext())
        with autocast:
            loss, logs, vis = self.method.step(self.model, labeled, unlabeled, self.step)
        apply_gradients(loss, self.scaler, (self.seg_opt, self.cls_opt), self.schedulers,
                        self.config["train"]["grad_clip"])
        self.method.after_step(unwrap(self.model), self.step)
        if self.monitor is not None and truth:
            self.monitor.add(vis, *truth)
        logs["total"] = loss.detach()
        self.finite.track(logs, self.step)
        self.window.add(logs)
        return vis

    def _check_finite(self) -> None:
        self.finite.check(self.run_dir, self.dist.enabled)

    def _log_scalars(self) -> Dict[str, str]:
        self._check_finite()
        means = self.window.means()
        for i, opt in enumerate((self.seg_opt, self.cls_opt)):
            means[f"lr/{'seg' if i == 0 else 'cls'}"] = opt.param_groups[0]["lr"]
        means.update(self.method.scalars())
        if self.monitor is not None:
            means.update({f"pseudo/{k}": v for k, v in self.monitor.flush(self.step).items()})
        self.logger.scalars(means, self.step)
        postfix = {"loss": f"{means.get('total', float('nan')):.3f}"}
        shown = self.last_val or self.last_metrics  # val; test only with eval.test_curves
        if shown:
            postfix.update(dice=f"{shown['dice']:.3f}", acc=f"{shown['accuracy']:.3f}")
        return postfix

    # ----------------------------------------------------------------------------------------------- evaluation
    def records(self, loader) -> list:
        """Per-image records (``Code.inference.metrics.RECORD_KEYS``) of ``loader``'s part, sorted by image; under DDP each rank
        evaluates a shard and the records are gathered (the sampler's padding repeats dropped)."""
        model = unwrap(self.model)
        model.eval()
        records = evaluate_model(model, loader, self.device, amp=self.amp_dtype is not None)
        model.train()
        gathered = {r["name"]: r for part in all_gather_objects(records) for r in part}
        return [gathered[name] for name in sorted(gathered)]

    def evaluate(self, loader=None) -> Dict[str, float]:
        """Metrics on the test part (or ``loader``'s part)."""
        return summarize_metrics(self.records(loader if loader is not None else self.eval_loader))

    def _evaluate_and_save(self) -> None:
        """Evaluate val (and test only with ``eval.test_curves``), log a ``metrics.csv`` row, save ``latest.pt``
        and, when val improves (:func:`selection.best_score`), the slim ``best.pt``."""
        self._check_finite()
        test = self.evaluate() if self.test_curves else None
        val = self.evaluate(self.val_loader) if self.val_loader is not None else None
        self.last_metrics = None if test is None else dict(test, step=self.step)
        self.last_val, self.last_eval_step = val, self.step
        improved = False
        if val is not None:  # chosen on val only
            task = self.config["task"]
            score = selection.best_score(val, task, self.step)
            if self.best is None or score > selection.best_score(self.best["val"], task, self.best["step"]):
                self.best, improved = {"step": self.step, "score": list(score), "val": val}, True
        rngs = all_gather_objects(rng_state())
        if self.dist.is_main:
            self.logger.metrics(test or {}, self.step, val)
            state = self.state_dict(rngs)
            save_checkpoint(self.run_dir / "checkpoints" / "latest.pt", state)
            if improved:
                save_checkpoint(self.run_dir / "checkpoints" / "best.pt", slim_state(state, val=val))
        barrier()


def format_metrics(metrics: Dict[str, float]) -> str:
    """One line of test metrics for the console."""
    parts = []
    for key in METRIC_KEYS:
        value = metrics.get(key, float("nan"))
        parts.append(f"{key} {'nan' if math.isnan(value) else f'{100 * value:.2f}'}")
    return " | ".join(parts)
