"""Command line of the two entry scripts: parse, resolve the config, prepare the run folder, train, report.

Run-folder rules (new, same config, other config, not a run × plain, ``--resume``, ``--force``) are those of
:mod:`Code.engine.run_folder`; SIGINT / SIGTERM save ``latest.pt`` and print how to continue
(:mod:`Code.engine.stop_signals`).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import torch

from Code.engine.config import CONFIG_DIR, load_config, parse_set_option
from Code.engine.distributed import barrier, cleanup_distributed, init_distributed, prepare_on_main
from Code.engine.run_folder import flat_keys, prepare_run_dir
from Code.engine.stop_signals import exit_status, stop_on_signals
from Code.errors import UserError
from Code.methods import method_names

ENTRY_DEFAULTS = {
    "seg": {"task": "seg", "model": {"saliency": True, "ias": False}},
    "cls": {"task": "cls", "model": {"saliency": False, "ias": True}},
}


def build_parser(task: str) -> argparse.ArgumentParser:
    what = "segmentation (saliency on, best by lesion Dice)" if task == "seg" else \
        "classification (inter-task attention on, best by balanced accuracy)"
    parser = argparse.ArgumentParser(description=f"Train Hermes for {what}. With no arguments: the built-in "
                                                 "ultrasound phantom with a CPU-sized schedule.")
    parser.add_argument("--config", help="YAML config (default: configs/phantom.yaml without --data, else base)")
    parser.add_argument("--data", help="split folder written by Code/DataProcess/data_split.py")
    parser.add_argument("--labels", type=int, help="label budget N: trains on <data>/train/N/")
    parser.add_argument("--out", help="run folder (default: runs/<task>_<method>_<data>_n<N>_s<seed>)")
    parser.add_argument("--iters", type=int, help="training iterations")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--method", choices=method_names())
    add_run_control_arguments(parser)
    return parser


def add_run_control_arguments(parser: argparse.ArgumentParser) -> None:
    """--resume, --force, --stop-after and --set, shared by every training entry (trainers, pre-training)."""
    parser.add_argument("--resume", help="'auto' continues the run in --out with its saved config; or a checkpoint path")
    parser.add_argument("--force", action="store_true", help="delete this script's own run at --out and start over (README: Outputs and --force)")
    parser.add_argument("--stop-after", type=int, metavar="K",
                        help="save latest.pt and stop once step K is reached, as if interrupted (resume later)")
    parser.add_argument("--set", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                        help="override any config key (repeatable)")


def flag_overrides(args: argparse.Namespace) -> List[Dict[str, Any]]:
    """The config overrides given on the command line: the flags, then each ``--set`` item."""
    flags = common_flags(args, ("seed", "device", "method"), "train")
    return [flags] + [parse_set_option(item) for item in args.set]


def common_flags(args: argparse.Namespace, top_level: Sequence[str], iters_section: str) -> Dict[str, Any]:
    """Config overrides from the flags every entry shares: ``top_level`` keys as given, ``--data``/``--labels``
    under ``data``, ``--iters`` under ``iters_section``."""
    flags: Dict[str, Any] = {key: getattr(args, key) for key in top_level if getattr(args, key, None) is not None}
    data = {k: v for k, v in (("split", args.data), ("labels", args.labels)) if v is not None}
    if data:
        flags["data"] = data
    if args.iters is not None:
        flags[iters_section] = {"iters": args.iters}
    return flags


def explicit_keys(args: argparse.Namespace) -> set:
    """Dotted keys the user chose (flags, ``--set``; ``"*"`` for all when ``--config`` names a file)."""
    return flat_keys(flag_overrides(args)) | ({"*"} if args.config else set())


def resolve_config(args: argparse.Namespace, task: str) -> Dict[str, Any]:
    """Base ← entry defaults ← config file ← flags ← ``--set``."""
    path = args.config or (None if args.data else str(CONFIG_DIR / "phantom.yaml"))
    config = load_config(path, overrides=flag_overrides(args), defaults=ENTRY_DEFAULTS[task])
    config["task"] = task
    return config


def default_run_dir(config: Dict[str, Any]) -> Path:
    split = config["data"]["split"]
    name = Path(split).name if split else "phantom"
    labels = config["data"]["labels"] if config["data"]["labels"] is not None else "default"
    return Path("runs") / f"{config['task']}_{config['method']}_{name}_n{labels}_s{config['seed']}"


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
        def prepare():
            from Code.engine.data import resolve_split
            plan = prepare_run_dir(run_dir, config, args.resume, args.force, explicit_keys(args))
            resolve_split(plan.config)  # builds the built-in phantom once, before other ranks read it
            return plan

        return _train(prepare_on_main(dist.is_main, prepare), run_dir, device, dist, args.stop_after)
    finally:
        barrier()
        cleanup_distributed()


def _train(plan, run_dir, device, dist, stop_after) -> int:
    from Code.common.checkpoint import load_checkpoint
    from Code.engine.trainer import Trainer, format_metrics

    config, checkpoint = plan.config, plan.checkpoint
    trainer = Trainer(config, run_dir, device, dist)
    if checkpoint is not None:
        trainer.load_state_dict(load_checkpoint(checkpoint))
        if plan.fork:  # another run's state: this folder's history (metrics.csv, best.pt) starts here
            trainer.forget_history()
        trainer.logger.purge_after(trainer.step)
        if dist.is_main:
            print(f"resuming {run_dir} from step {trainer.step} ({checkpoint})", file=sys.stderr)
    with stop_on_signals(trainer, enabled=not dist.enabled):
        if dist.is_main:
            print(f"run {run_dir}: method {config['method']}, data {trainer.split} (N={trainer.labels}), "
                  f"{config['train']['iters']} iterations on {device}", file=sys.stderr, flush=True)
        try:
            result = trainer.fit(stop_after=stop_after)
        finally:
            trainer.close()
    if dist.is_main:
        if result.get("stopped"):
            print(f"stopped at step {result['step']}; continue with --resume auto --out {run_dir} "
                  "(or run the same command again)", flush=True)
        else:
            final = result["test_at_final"]
            print(f"test metrics at the final step ({final['step']}):      {format_metrics(final)}")
            best = result["test_at_best_val"]
            if best is None:
                print("test metrics at the val-chosen step: unavailable (the split has no val/ part)")
            else:
                print(f"test metrics at the val-chosen step ({best['step']}): {format_metrics(best)}")
            print(f"run folder: {run_dir}  (tensorboard --logdir {run_dir / 'tensorboard'})")
    return exit_status(result, trainer)
