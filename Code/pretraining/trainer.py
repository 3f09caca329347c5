"""The pre-training loop (MoCo v2, Code/pretraining/moco.py) with the engine's habits: a progress bar, TensorBoard,
atomic checkpoints, exact resume, DDP under ``torchrun``.

One step, for a batch of B images with two views (v₁, v₂) and ids i:
    θ_k ← m·θ_k + (1 − m)·θ_q;   q = f_q(v₁), k = f_k(v₂) (shuffled, split BN);
    L = InfoNCE(q, k, queue, T) with the queue entries of the same image masked;   one optimiser step on θ_q;
    the keys of every rank (and their ids) enter the queue.
TensorBoard: ``loss/infonce``, ``lr/encoder``, ``health/embed_std`` (√D · batch std of the unit query
embeddings: ≈ 1 healthy, → 0 collapse), ``health/instance_acc`` (share of queries whose own key wins); every
``monitor.every`` steps and at step 0 (the random initialisation), when the split has ``val/``,
``val/knn_accuracy`` and ``val/knn_balanced_accuracy`` (also in ``metrics.csv`` as ``val_knn_…``).
Output: ``RUN/encoder.pth`` (:func:`encoder_file_state`).
"""
from __future__ import annotations

import math
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Dict, Optional

import torch
from tqdm import tqdm

from Code.common.checkpoint import clean_state_dict, save_checkpoint
from Code.engine.data import BatchStream
from Code.engine.distributed import DistInfo, all_gather_objects, all_gather_tensor, barrier, unwrap
from Code.engine.logging import RunLogger, ScalarWindow
from Code.engine.runtime import amp_dtype, apply_gradients, rng_state, seed_everything, set_rng_state
from Code.errors import UserError
from Code.losses.infonce import infonce_loss
from Code.pretraining.data import TwoViewDataset, resolve_pretrain_sources
from Code.pretraining.knn import KNN_KEYS, KnnMonitor
from Code.pretraining.moco import (KeyQueue, ProjectionBranch, embedding_std, encode_keys, make_key_branch,
                                   momentum_update)

OBJECTIVE = "mocov2"


def warmup_cosine(warmup: int, total: int):
    """lr factor after t steps: (t + 1)/warmup during the warm-up, then ½(1 + cos(π·progress)) down to 0."""
    def factor(t: int) -> float:
        if t < warmup:
            return (t + 1) / warmup
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (t - warmup) / max(1, total - warmup))))
    return factor


def build_optimizer(params, pre: Dict[str, Any]) -> torch.optim.Optimizer:
    if pre["optimizer"] == "adamw":
        return torch.optim.AdamW(params, lr=pre["lr"], weight_decay=pre["weight_decay"])
    return torch.optim.SGD(params, lr=pre["lr"], momentum=pre["momentum"], weight_decay=pre["weight_decay"])


def encoder_file_state(encoder: torch.nn.Module, config: Dict[str, Any], step: int) -> Dict[str, Any]:
    """What ``encoder.pth`` holds: the encoder's ``state_dict`` plus the settings it must be used with
    (``encoder_name``, ``in_channels``; checked by Code/models/encoders.py) and where it came from."""
    return {"state_dict": {k: v.detach().cpu() for k, v in clean_state_dict(encoder.state_dict()).items()},
            "encoder_name": config["model"]["encoder_name"], "in_channels": config["data"]["in_channels"],
            "objective": OBJECTIVE, "step": step, "iters": config["pretrain"]["iters"],
            "image_size": config["data"]["size"], "split": str(config["data"]["split"])}


def moco_step(query, key, queue: KeyQueue, optimizer, scheduler, scaler, batch, pre: Dict[str, Any],
              dtype: Optional[torch.dtype]) -> Dict[str, torch.Tensor]:
    """One MoCo v2 step (module docstring) on ``batch = (view_q, view_k, ids)``; returns 0-dim logs on the device."""
    view_q, view_k, ids = batch
    momentum_update(unwrap(query), key, pre["key_momentum"])
    with torch.autocast("cuda", dtype=dtype) if dtype is not None else nullcontext():
        q = query(view_q)
        k = encode_keys(key, view_k)
    loss, accuracy = infonce_loss(q.float(), k.float(), queue.keys, pre["temperature"], ids, queue.ids,
                                  pre["batch_negatives"])
    apply_gradients(loss, scaler, (optimizer,), (scheduler,) if scheduler is not None else (), 0.0)
    queue.push(all_gather_tensor(k.detach().float()), all_gather_tensor(ids))
    return {"infonce": loss.detach(), "instance_acc": accuracy, "embed_std": embedding_std(q)}


class PretrainTrainer:
    """Owns the query and key branches, the queue, the optimiser, the view stream and the run outputs."""

    def __init__(self, config: Dict[str, Any], run_dir: Path, device: torch.device, dist: DistInfo = DistInfo()):
        self.config, self.run_dir, self.device, self.dist = config, Path(run_dir), device, dist
        data, pre = config["data"], config["pretrain"]
        self.sources = resolve_pretrain_sources(config)
        n_images = len(self.sources.images)
        if pre["queue_size"] >= n_images:
            raise UserError(f"config key 'pretrain.queue_size' ({pre['queue_size']}) must be smaller than the number "
                            f"of train images ({n_images} in {self.sources.split})")
        seed_everything(config["seed"] + dist.rank)
        if pre["deterministic"]:
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.benchmark = False
        elif device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        dataset = TwoViewDataset(self.sources.images, data["size"], data["in_channels"], config["views"],
                                 config["seed"])
        self.stream = BatchStream(dataset, pre["batch"], config["seed"], 2, data["num_workers"], dist,
                                  device.type == "cuda")
        self.channels_last = device.type == "cuda" and pre["channels_last"]
        branch = ProjectionBranch(config["model"]["encoder_name"], data["in_channels"], pre["proj_hidden"],
                                  pre["proj_dim"], pre["bn_splits"]).to(device)
        if self.channels_last:
            branch = branch.to(memory_format=torch.channels_last)
        self.query = branch
        if dist.enabled:  # DDP copies rank 0's weights into ``branch`` here, before the key copy is made
            ids = [dist.local_rank] if device.type == "cuda" else None
            self.query = torch.nn.parallel.DistributedDataParallel(branch, device_ids=ids)
        self.key = make_key_branch(branch)
        self.queue = KeyQueue(pre["queue_size"], pre["proj_dim"], seed=config["seed"]).to(device)
        self.optimizer = build_optimizer(branch.parameters(), pre)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer,
                                                           warmup_cosine(pre["warmup_iters"], pre["iters"]))
        self.amp_dtype = amp_dtype({"train": {"amp": pre["amp"]}}, device)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        self.monitor = None
        if self.sources.val is not None and dist.is_main:
            self.monitor = KnnMonitor(self.sources.knn_bank, self.sources.val, data["size"], data["in_channels"],
                                      config["monitor"]["knn_k"])
        self.logger = RunLogger(self.run_dir, (), enabled=dist.is_main, val_keys=KNN_KEYS)
        self.window = ScalarWindow()
        self.step, self.last_knn = 0, None
        self.stop_requested = False  # set by a signal handler (Code/engine/stop_signals.py): save, then stop

    # ----------------------------------------------------------------------------------------------- state
    def state_dict(self, rngs: Optional[list] = None) -> Dict[str, Any]:
        return {"step": self.step, "config": self.config, "model": unwrap(self.query).state_dict(),
                "key_model": self.key.state_dict(), "queue": self.queue.state_dict(),
                "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict(), "stream": self.stream.state_dict(),
                "rng": rngs if rngs is not None else [rng_state()], "last_knn": self.last_knn}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        if "key_model" not in state or "queue" not in state:
            raise UserError("the checkpoint to resume is not a pre-training checkpoint (no key encoder or queue)")
        unwrap(self.query).load_state_dict(clean_state_dict(state["model"]))
        self.key.load_state_dict(clean_state_dict(state["key_model"]))
        self.queue.load_state_dict(state["queue"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.stream.load_state_dict(state["stream"])
        if len(state["rng"]) == self.dist.world_size:
            set_rng_state(state["rng"][self.dist.rank])
        else:  # saved with another number of processes: continue reproducibly, though not bit-exactly
            seed_everything(self.config["seed"] + self.dist.rank + 1000003 * state["step"])
        self.step, self.last_knn = state["step"], state["last_knn"]

    # ----------------------------------------------------------------------------------------------- loop
    def fit(self, stop_after: Optional[int] = None) -> Dict[str, Any]:
        """Train to ``pretrain.iters`` (or save and stop at ``stop_after``, or after the step during which a signal
        set ``stop_requested``), then write ``encoder.pth``."""
        total = self.config["pretrain"]["iters"]
        log_every, every = self.config["log"]["every"], self.config["monitor"]["every"]
        bar = tqdm(total=total, initial=self.step, disable=not self.dist.is_main, dynamic_ncols=True, desc="pretrain")
        self.query.train()
        self.key.train()
        if self.step == 0 and self.monitor is not None:  # the k-NN of the random initialisation: the baseline
            self._run_monitor()
        while self.step < total:
            self._train_one_step()
            self.step += 1
            bar.update(1)
            if self.step % log_every == 0 or self.step == total:
                bar.set_postfix(self._log_scalars(), refresh=False)
            if self.step % every == 0 or self.step == total:
                self._checkpoint(monitor=True)
            wants_stop = self.stop_requested or (stop_after is not None and self.step >= stop_after)
            if wants_stop and self.step < total:
                bar.close()
                self._checkpoint(monitor=False)
                self.logger.close()
                return {"step": self.step, "stopped": True}
        bar.close()
        encoder_path = self.run_dir / "encoder.pth"
        if self.dist.is_main:
            save_checkpoint(encoder_path, encoder_file_state(unwrap(self.query).encoder, self.config, self.step))
        self.logger.close()
        barrier()
        return {"step": self.step, "encoder": encoder_path, "knn": self.last_knn}

    def close(self) -> None:
        """Shut the view stream's loader workers down (the cli calls it however ``fit`` ends)."""
        self.stream.close()

    def _train_one_step(self) -> None:
        view_q, view_k, ids = (t.to(self.device, non_blocking=True) for t in next(self.stream))
        if self.channels_last:
            view_q, view_k = (v.contiguous(memory_format=torch.channels_last) for v in (view_q, view_k))
        logs = moco_step(self.query, self.key, self.queue, self.optimizer, self.scheduler, self.scaler,
                         (view_q, view_k, ids), self.config["pretrain"], self.amp_dtype)
        self.window.add(logs)

    def _log_scalars(self) -> Dict[str, str]:
        means = self.window.means()
        if not math.isfinite(means.get("infonce", 0.0)):
            latest = self.run_dir / "checkpoints" / "latest.pt"
            kept = f"last good checkpoint kept: {latest}" if latest.exists() else "no checkpoint was written"
            raise UserError(f"non-finite pre-training loss by step {self.step}; training stopped, {kept}")
        lr = self.optimizer.param_groups[0]["lr"]
        if self.logger.writer is not None:
            tags = {"infonce": "loss/infonce", "instance_acc": "health/instance_acc", "embed_std": "health/embed_std"}
            for key, tag in tags.items():
                self.logger.writer.add_scalar(tag, means[key], self.step)
            self.logger.writer.add_scalar("lr/encoder", lr, self.step)
        postfix = {"loss": f"{means['infonce']:.3f}", "std": f"{means['embed_std']:.2f}"}
        if self.last_knn:
            postfix["knn"] = f"{self.last_knn['knn_accuracy']:.3f}"
        return postfix

    def _run_monitor(self) -> None:
        scores = self.monitor(unwrap(self.query), self.device)
        self.last_knn = dict(scores, step=self.step)
        self.logger.metrics({}, self.step, val=scores)

    def _checkpoint(self, monitor: bool) -> None:
        """k-NN monitor (rank 0, when the split has val/ and ``monitor``), then ``checkpoints/latest.pt``."""
        if monitor and self.monitor is not None:
            self._run_monitor()
        rngs = all_gather_objects(rng_state())
        if self.dist.is_main:
            save_checkpoint(self.run_dir / "checkpoints" / "latest.pt", self.state_dict(rngs))
        barrier()
