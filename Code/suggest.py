"""Which unlabeled images to label next: a ranked list for the annotator (README "Which images to label next").

Usage::

    python Code/suggest.py --checkpoint RUN/checkpoints/best.pt --data SPLIT --labels N --k 24 --out suggestions/
        [--strategy random|entropy|disagreement|diverse] [--seed 0] [--diverse-factor 3] [--batch-size 16]
        [--device auto|cpu|cuda] [--no-amp] [--force]

Scores every image of ``SPLIT/train/N/unlabeled/`` (``unlabeled.txt``) with the saved model, as it is, in batches
(the split's test and val parts are never read) and writes to ``--out`` (the output rule, README "Outputs and
--force"): ``to_label.csv`` — the k chosen images, best first: rank, image (its name in the pool), score, the
parts of the score (pixel_entropy, class_entropy, disagreement, prob_malignant, lesion_area), cluster (``diverse``)
and empty ``mask`` and ``label`` columns for the annotator, so that the filled-in file is the input of
``data_split.py --add-labels`` — ``contact_sheet.png`` (each chosen image, its predicted lesion and its entropy
map) and ``suggest.json`` (the settings). The scores and strategies are defined in ``Code/active/strategies.py``.
A checkpoint trained on another split or budget is refused (``Code/active/split_check.py``).
"""
from __future__ import annotations

import _bootstrap  # noqa: F401

import argparse
import csv
import json
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from Code.active.strategies import DEFAULT_DIVERSE_FACTOR, PARTS, STRATEGIES, select
from Code.errors import UserError, run_cli
from Code.outputs import FORCE_HELP, prepare_output_folder, refuse_protected

CSV_COLUMNS = ("rank", "image", "score", *PARTS, "cluster", "mask", "label")


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Rank a budget's unlabeled images: which to label next.")
    parser.add_argument("--checkpoint", required=True, help="RUN/checkpoints/best.pt, trained on --data --labels N")
    parser.add_argument("--data", required=True, help="the split folder (data_split.py --out)")
    parser.add_argument("--labels", required=True, type=int, metavar="N", help="the budget whose pool is scored")
    parser.add_argument("--k", required=True, type=int, help="how many images to suggest")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--strategy", choices=STRATEGIES, default="entropy")
    parser.add_argument("--seed", type=int, default=0, help="seed of 'random' and of the k-means of 'diverse'")
    parser.add_argument("--diverse-factor", type=int, default=DEFAULT_DIVERSE_FACTOR, metavar="M",
                        help="'diverse' clusters the M*k most uncertain images")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--no-amp", action="store_true", help="full precision on CUDA")
    parser.add_argument("--force", action="store_true", help=FORCE_HELP)
    args = parser.parse_args(argv)
    for flag in ("k", "batch_size", "diverse_factor"):
        if getattr(args, flag) <= 0:
            raise UserError(f"--{flag.replace('_', '-')} must be positive, got {getattr(args, flag)}")
    return args


def read_pool(data: Path, labels: int) -> List[Path]:
    """The image files of ``data/train/<labels>/unlabeled/``, in ``unlabeled.txt`` order; UserError if missing."""
    from Code.data import read_unlabeled_list

    if not (data / "split.json").is_file():
        raise UserError(f"--data {data} is not a split folder (no split.json; make one with data_split.py)")
    part = data / "train" / str(labels) / "unlabeled"
    if not (data / "train" / str(labels)).is_dir():
        budgets = sorted((p.name for p in (data / "train").glob("*") if p.name.isdigit()), key=int)
        raise UserError(f"--labels {labels}: no budget train/{labels}/ in {data} (has: {', '.join(budgets)})")
    listed = part / "unlabeled.txt"
    if listed.is_file() and not listed.read_text(encoding="utf-8").strip():
        raise UserError(f"the unlabeled pool {listed} is empty: budget {labels} labels every train image")
    paths = [part / "image" / name for name in read_unlabeled_list(listed)]
    missing = next((p for p in paths if not p.is_file()), None)
    if missing is not None:
        raise UserError(f"{listed} lists {missing.name}, which is not in {missing.parent}")
    return paths


def csv_rows(paths: Sequence[Path], chosen: Sequence[int], scores: np.ndarray, parts: Dict[str, np.ndarray],
             clusters: Dict[int, int]) -> List[Dict]:
    """The rows of to_label.csv, best first (mask and label left empty for the annotator)."""
    return [dict({"rank": rank, "image": paths[i].name, "score": float(scores[i])},
                 **{name: float(parts[name][i]) for name in PARTS},
                 cluster=clusters.get(i, ""), mask="", label="") for rank, i in enumerate(chosen, start=1)]


def write_outputs(out: Path, rows: List[Dict], maps, settings: Dict) -> None:
    from Code.active.sheet import contact_sheet

    with (out / "to_label.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    titles = [f"#{r['rank']} {r['image']} score {r['score']:.3f}" for r in rows]
    contact_sheet(out / "contact_sheet.png", maps, titles)
    (out / "suggest.json").write_text(json.dumps(settings, indent=1, sort_keys=True) + "\n")


def main(argv: Optional[Sequence[str]] = None) -> int:
    from Code.active.scoring import predict_maps, score_pool
    from Code.active.split_check import check_checkpoint_split
    from Code.inference.loading import load_model_from_checkpoint
    from Code.evaluate import resolve_device

    args = parse_args(argv)
    data, checkpoint = Path(args.data), Path(args.checkpoint)
    paths = read_pool(data, args.labels)
    if args.k > len(paths):
        raise UserError(f"--k {args.k} is larger than the unlabeled pool of budget {args.labels} "
                        f"({len(paths)} images in {paths[0].parent.parent})")
    if not checkpoint.is_file():
        raise UserError(f"checkpoint not found: {checkpoint}")
    device = resolve_device(args.device)
    model, config, _ = load_model_from_checkpoint(checkpoint, device)
    check_checkpoint_split(config, checkpoint, data, args.labels)
    inputs = [(checkpoint, f"--checkpoint {checkpoint}"), (data, f"--data {data}")]
    refuse_protected(Path(args.out), inputs)  # also a new folder: never written into the split or the run
    out = prepare_output_folder(args.out, "suggest.py", args.force, inputs)
    size, channels = config["data"]["size"], config["data"]["in_channels"]
    amp = device.type == "cuda" and not args.no_amp
    parts, features = score_pool(model, paths, size, channels, device, args.batch_size, amp)
    chosen, scores, clusters = select(args.strategy, parts, features, args.k, args.seed, args.diverse_factor)
    rows = csv_rows(paths, chosen, scores, parts, clusters)
    maps = predict_maps(model, [paths[i] for i in chosen], size, channels, device, amp)
    settings = {"checkpoint": str(checkpoint), "data": str(data), "labels": args.labels, "k": args.k,
                "strategy": args.strategy, "seed": args.seed, "diverse_factor": args.diverse_factor,
                "pool_size": len(paths)}
    write_outputs(out, rows, maps, settings)
    print(f"scored {len(paths)} unlabeled images of budget {args.labels} ({args.strategy}); the {args.k} to label "
          f"next are in {out / 'to_label.csv'} (contact sheet {out / 'contact_sheet.png'})")
    return 0


if __name__ == "__main__":
    run_cli(main)
