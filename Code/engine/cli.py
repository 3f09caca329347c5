"""Command line of the two entry scripts: parse, resolve the config, prepare the run folder, train, report.

Run-folder rules: a new or empty ``--out`` starts a run; an ``--out`` that holds a run with the same config resumes
it from ``checkpoints/latest.pt`` (UniMatch-style automatic resume); a different config is refused unless
``--resume`` (continue with the saved config) or ``--force`` (delete and start over); a non-empty folder that is
not a Hermes run is refused unless ``--force``.
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
import yaml

from Code.engine.config import CONFIG_DIR, METHODS, dump_config, load_config, parse_set_option
from Code.engine.distributed import broadcast_object, barrier, cleanup_distributed, init_distributed
from Code.errors import UserError

ENTRY_DEFAULTS = {
    "seg": {"task": "seg", "model": {"saliency": True, "ias": False}},
    "cls": {"task": "cls", "model": {"saliency": False, "ias": True}},
}


def build_parser(task: str) -> argparse.ArgumentParser:
    what = "segmentation (saliency on, best by lesion Dice)" if task == "seg" else \
        "classification (inter-task attention on, best by accuracy)"
    parser = argparse.ArgumentParser(description=f"Train Hermes for {what}. With no arguments: the built-in "
                                                 "ultrasound phantom with a CPU-sized schedule.")
    parser.add_argument("--config", help="YAML config (default: configs/phantom.yaml without --data, else base)")
    parser.add_argument("--data", help="split folder written by Code/DataProcess/data_split.py")
    parser.add_argument("--labels", type=int, help="label budget N: trains on <data>/train/N/")
    parser.add_argument("--out", help="run folder (default: runs/<task>_<method>_<data>_n<N>_s<seed>)")
    parser.add_argument("--iters", type=int, help="training iterations")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--method", choices=METHODS)
    parser.add_argument("--resume", help="'auto' continues the run in --out with its saved config; or a checkpoint path")
    parser.add_argument("--force", action="store_true", help="delete an existing run folder and start over")
    parser.add_argument("--stop-after", type=int, metavar="K",
                        help="save latest.pt and stop once step K is reached, as if interrupted (resume later)")
    parser.add_argument("--set", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                        help="override any config key (repeatable)")
    return parser


def resolve_config(args: argparse.Namespace, task: str) -> Dict[str, Any]:
    """Base ← entry defaults ← config file ← flags ← ``--set``."""
    path = args.config or (None if args.data else str(CONFIG_DIR / "phantom.yaml"))
    flags: Dict[str, Any] = {}
    for key, value in (("seed", args.seed), ("device", args.device), ("method", args.method)):
        if value is not None:
            flags[key] = value
    data = {k: v for k, v in (("split", args.data), ("labels", args.labels)) if v is not None}
    if data:
        flags["data"] = data
    if args.iters is not None:
        flags["train"] = {"iters": args.iters}
    overrides = [flags] + [parse_set_option(item) for item in args.set]
    config = load_config(path, overrides=overrides, defaults=ENTRY_DEFAULTS[task])
    config["task"] = task
    return config


def default_run_dir(config: Dict[str, Any]) -> Path:
    split = config["data"]["split"]
    name = Path(split).name if split else "phantom"
    labels = config["data"]["labels"] if config["data"]["labels"] is not None else "default"
    return Path("runs") / f"{config['task']}_{config['method']}_{name}_n{labels}_s{config['seed']}"


def _differences(a: Dict[str, Any], b: Dict[str, Any], prefix: str = "") -> List[str]:
    keys = sorted(set(a) | set(b))
    out = []
    for key in keys:
        va, vb = a.get(key), b.get(key)
        if isinstance(va, dict) and isinstance(vb, dict):
            out.extend(_differences(va, vb, f"{prefix}{key}."))
        elif va != vb:
            out.append(f"{prefix}{key}")
    return out


def prepare_run_dir(run_dir: Path, config: Dict[str, Any], resume: Optional[str], force: bool
                    ) -> Tuple[Dict[str, Any], Optional[Path]]:
    """Apply the run-folder rules; return ``(config to use, checkpoint to resume from or None)``."""
    config_file = run_dir / "config.yaml"
    if force and run_dir.exists():
        shutil.rmtree(run_dir)
    checkpoint: Optional[Path] = None
    if resume and resume != "auto":
        checkpoint = Path(resume)
        if not checkpoint.is_file():
            raise UserError(f"--resume: checkpoint not found: {checkpoint}")
    elif run_dir.exists() and any(run_dir.iterdir()):
        if not config_file.is_file():
            raise UserError(f"{run_dir} exists and is not a Hermes run folder; choose another --out or add --force")
        saved = yaml.safe_load(config_file.read_text())
        diff = _differences(saved, config)
        if diff and not resume:
            raise UserError(f"{run_dir} holds a run with a different config (differs in: {', '.join(diff[:6])}); "
                            "add --resume auto to continue it with its saved config, or --force to start over")
        if diff:
            print(f"note: continuing with the saved config of {run_dir}; ignored: {', '.join(diff[:6])}",
                  file=sys.stderr)
        config = saved
        latest = run_dir / "checkpoints" / "latest.pt"
        checkpoint = latest if latest.is_file() else None
        if checkpoint is None:  # a run that died before its first checkpoint: start it again cleanly
            for stale in (run_dir / "metrics.csv", run_dir / "tensorboard"):
                shutil.rmtree(stale, ignore_errors=True) if stale.is_dir() else stale.unlink(missing_ok=True)
    if checkpoint is not None and checkpoint != run_dir / "checkpoints" / "latest.pt":
        config = torch.load(checkpoint, map_location="cpu", weights_only=False)["config"]
    run_dir.mkdir(parents=True, exist_ok=True)
    config_file.write_text(dump_config(config))
    return config, checkpoint


def select_device(config: Dict[str, Any], local_rank: int) -> torch.device:
    wanted = config["device"]
    if wanted == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for, but CUDA is not available on this machine (use --device cpu)")
    if wanted == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", local_rank)


def main(argv: Optional[Sequence[str]], task: str) -> int:
    """Entry point of ``seg_train.py`` (task ``seg``) and ``cls_train.py`` (task ``cls``)."""
    args = build_parser(task).parse_args(argv)
    config = resolve_config(args, task)
    device_kind = "cuda" if config["device"] != "cpu" and torch.cuda.is_available() else "cpu"
    dist = init_distributed(device_kind)
    try:
        device = select_device(config, dist.local_rank)
        run_dir = Path(args.out) if args.out else default_run_dir(config)
        prepared: Any = None
        if dist.is_main:
            try:
                prepared = prepare_run_dir(run_dir, config, args.resume, args.force)
                from Code.engine.data import resolve_split
                resolve_split(prepared[0])  # builds the built-in phantom once, before other ranks read it
            except UserError as exc:
                prepared = exc
        prepared = broadcast_object(prepared)
        if isinstance(prepared, UserError):
            raise prepared
        config, checkpoint = prepared
        return _train(config, run_dir, device, dist, checkpoint, args.stop_after)
    finally:
        barrier()
        cleanup_distributed()


def _train(config, run_dir, device, dist, checkpoint, stop_after) -> int:
    from Code.engine.checkpoint import load_checkpoint
    from Code.engine.trainer import Trainer, format_metrics

    trainer = Trainer(config, run_dir, device, dist)
    if checkpoint is not None:
        trainer.load_state_dict(load_checkpoint(checkpoint))
        if dist.is_main:
            print(f"resuming {run_dir} from step {trainer.step} ({checkpoint})", file=sys.stderr)
    if dist.is_main:
        print(f"run {run_dir}: method {config['method']}, data {trainer.split} (N={trainer.labels}), "
              f"{config['train']['iters']} iterations on {device}", file=sys.stderr)
    result = trainer.fit(stop_after=stop_after)
    if dist.is_main:
        if result.get("stopped"):
            print(f"stopped at step {result['step']}; continue with --resume auto --out {run_dir}")
        else:
            final = result["test_at_final"]
            print(f"test metrics at the final step ({final['step']}):      {format_metrics(final)}")
            best = result["test_at_best_val"]
            if best is None:
                print("test metrics at the val-chosen step: unavailable (the split has no val/ part)")
            else:
                print(f"test metrics at the val-chosen step ({best['step']}): {format_metrics(best)}")
            print(f"run folder: {run_dir}  (tensorboard --logdir {run_dir / 'tensorboard'})")
    return 0
