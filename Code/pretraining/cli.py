"""Command line of ``Code/pretrain.py``: parse, resolve the config, prepare the run folder, pre-train, export.

Run-folder rules: Code/pretraining/run_dir.py (the trainers' rules and code: the same config resumes from
``checkpoints/latest.pt``; ``--iters K`` extends or shortens a run, with or without ``--resume auto``; another
config is refused unless ``--resume auto`` or ``--force``; a folder that is not a run is never written to or
deleted). SIGINT / SIGTERM save ``latest.pt`` after the current step and exit 130, as the trainers
(Code/engine/stop_signals.py).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import torch

from Code.engine.cli import add_run_control_arguments, common_flags, select_device
from Code.engine.config import parse_set_option
from Code.engine.distributed import barrier, cleanup_distributed, init_distributed, prepare_on_main
from Code.engine.run_folder import flat_keys
from Code.engine.stop_signals import exit_status, stop_on_signals
from Code.pretraining.config import load_pretrain_config
from Code.pretraining.run_dir import prepare_pretrain_dir


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Self-supervised pre-training (MoCo v2) of the encoder on a split's train images only; "
                    "writes RUN/encoder.pth for model.encoder_weights. With no arguments: the built-in phantom.")
    parser.add_argument("--data", help="split folder written by Code/DataProcess/data_split.py")
    parser.add_argument("--labels", type=int, help="label budget N: images of <data>/train/N/ (k-NN bank: its "
                                                   "labeled part); default: every budget's images")
    parser.add_argument("--config", help="YAML config layered on configs/pretrain.yaml")
    parser.add_argument("--out", help="run folder (default: runs/pretrain_<data>_<encoder>_s<seed>)")
    parser.add_argument("--iters", type=int, help="pre-training iterations")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"))
    add_run_control_arguments(parser)
    return parser


def overrides(args: argparse.Namespace) -> List[Dict[str, Any]]:
    """The config overrides given on the command line: the flags, then each ``--set`` item."""
    return [common_flags(args, ("seed", "device"), "pretrain")] + [parse_set_option(item) for item in args.set]


def resolve_config(args: argparse.Namespace) -> Dict[str, Any]:
    """configs/pretrain.yaml ← ``--config`` ← flags ← ``--set``."""
    return load_pretrain_config(args.config, overrides(args))


def explicit_keys(args: argparse.Namespace) -> set:
    """Dotted keys the user chose (flags, ``--set``; ``"*"`` for all when ``--config`` names a file)."""
    return flat_keys(overrides(args)) | ({"*"} if args.config else set())


def default_run_dir(config: Dict[str, Any]) -> Path:
    split = config["data"]["split"]
    name = Path(split).name if split else "phantom"
    encoder = config["model"]["encoder_name"].replace("/", "_")
    return Path("runs") / f"pretrain_{name}_{encoder}_s{config['seed']}"


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    config = resolve_config(args)
    device_kind = "cuda" if config["device"] != "cpu" and torch.cuda.is_available() else "cpu"
    dist = init_distributed(device_kind)
    try:
        device = select_device(config, dist.local_rank)
        run_dir = Path(args.out) if args.out else default_run_dir(config)
        def prepare():
            from Code.pretraining.data import resolve_pretrain_sources
            plan = prepare_pretrain_dir(run_dir, config, args.resume, args.force, explicit_keys(args))
            resolve_pretrain_sources(plan.config)  # builds the built-in phantom once, before other ranks
            return plan

        return _pretrain(prepare_on_main(dist.is_main, prepare), run_dir, device, dist, args.stop_after)
    finally:
        barrier()
        cleanup_distributed()


def _pretrain(plan, run_dir, device, dist, stop_after) -> int:
    from Code.common.checkpoint import load_checkpoint
    from Code.pretraining.trainer import PretrainTrainer

    config, checkpoint = plan.config, plan.checkpoint
    trainer = PretrainTrainer(config, run_dir, device, dist)
    if checkpoint is not None:
        trainer.load_state_dict(load_checkpoint(checkpoint))
        if plan.fork:  # another run's state: this folder's k-NN history starts here
            trainer.last_knn = None
        trainer.logger.purge_after(trainer.step)
        if dist.is_main:
            print(f"resuming {run_dir} from step {trainer.step} ({checkpoint})", file=sys.stderr)
    with stop_on_signals(trainer, enabled=not dist.enabled):
        if dist.is_main:
            sources = trainer.sources
            print(f"pre-training {config['model']['encoder_name']} on {len(sources.images)} train images of "
                  f"{sources.split} (budgets {', '.join(map(str, sources.budgets))}; k-NN monitor: "
                  f"{'val/ against ' + str(sources.knn_bank) if sources.val else 'off, the split has no val/'}), "
                  f"{config['pretrain']['iters']} iterations on {device}", file=sys.stderr, flush=True)
        try:
            result = trainer.fit(stop_after=stop_after)
        finally:
            trainer.close()
    if dist.is_main:
        if result.get("stopped"):
            print(f"stopped at step {result['step']}; continue with --resume auto --out {run_dir} "
                  "(or run the same command again)", flush=True)
        else:
            knn = result["knn"]
            if knn:
                print(f"k-NN on val (step {knn['step']}): accuracy {100 * knn['knn_accuracy']:.2f} | "
                      f"balanced accuracy {100 * knn['knn_balanced_accuracy']:.2f}")
            print(f"encoder written to {result['encoder']}; train from it with "
                  f"--set model.encoder_weights={result['encoder']} (model.encoder_name="
                  f"{config['model']['encoder_name']}, data.in_channels={config['data']['in_channels']})")
            print(f"run folder: {run_dir}  (tensorboard --logdir {run_dir / 'tensorboard'})")
    return exit_status(result, trainer)
