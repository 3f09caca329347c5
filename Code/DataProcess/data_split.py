"""Split a raw ultrasound data set into test / labeled / unlabeled parts (layout: docs/design.md, "Data").

    python Code/DataProcess/data_split.py --dataset {sztus,busi,csv} --root RAW --out SPLIT --labels N [N ...|all]
        [--seed 0] [--draw-seed S] [--test-ratio 0.3] [--val-ratio 0.1] [--group-regex REGEX] [--include-normal]
        [--csv FILE] [--force] [--extra-unlabeled DIR_OR_CSV ...] [--near-dup-threshold 0.98|off]
    python Code/DataProcess/data_split.py --add-labels FILE.csv --out SPLIT --labels N [--force]

Per class, ~test-ratio of the images (whole groups) go to test/ and ~val-ratio to val/ (where checkpoints are
chosen; carved from train before any budget is drawn; 0 = no val/); for each budget N, N/2 labeled images per class
(whole groups, nested: a larger N's labeled set contains every smaller one's) and the rest of train unlabeled.
Groups: sztus = case id (``L1-0001`` of ``L1-0001-2.png``), busi = each image, csv = the ``group`` column;
``--group-regex`` overrides (first capture group of the file stem). ``--include-normal`` (busi) adds the normal
images as class 0 with empty masks. The rule and the file renaming are described in splitting.py/split_plan.py.
``--labels all`` labels every train image (one budget, N = their number). CSV rows with empty mask and label and
``--extra-unlabeled`` images join every budget's unlabeled pool only (unlabeled_pool.py).
Near-duplicate images (32×32 correlation ≥ ``--near-dup-threshold``) join one group; sets with both classes are
dropped and listed (near_duplicates.py). ``--draw-seed S`` (default ``--seed``) redraws only the labeled/unlabeled
partition of train: test and val depend on ``--seed`` alone, so draws stay comparable.
``--add-labels FILE.csv`` (columns image, mask, label) moves those images of ``SPLIT/train/N/``'s unlabeled pool
into a new budget ``train/<N+k>/`` of the existing split, from the split's own files (add_labels.py).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from Code.DataProcess.near_duplicates import DEFAULT_THRESHOLD, parse_threshold  # noqa: E402
from Code.DataProcess.splitting import format_summary, split_dataset  # noqa: E402
from Code.errors import UserError, run_cli  # noqa: E402
from Code.outputs import FORCE_HELP  # noqa: E402


def budget(text: str):
    """A ``--labels`` value: ``all`` or an integer."""
    if text == "all":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number or 'all'") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", choices=("sztus", "busi", "csv"))
    parser.add_argument("--root", help="raw data folder (csv: paths in the CSV are relative to it)")
    parser.add_argument("--out", required=True, help="output split folder")
    parser.add_argument("--labels", required=True, type=budget, nargs="+", metavar="N",
                        help="label budgets (even): N/2 labeled images per class; 'all': every labeled train image")
    parser.add_argument("--seed", type=int, default=0, help="seed of the test / val assignment")
    parser.add_argument("--draw-seed", type=int, default=None,
                        help="seed of the labeled/unlabeled draw of train (default: --seed); test and val unchanged")
    parser.add_argument("--test-ratio", type=float, default=0.3)
    parser.add_argument("--val-ratio", type=float, default=0.1,
                        help="share of each class carved from train into val/ (checkpoint choice); 0 = none")
    parser.add_argument("--group-regex", default=None, help="group = first capture group of the file stem")
    parser.add_argument("--include-normal", action="store_true", help="busi: add normal images as class 0")
    parser.add_argument("--csv", default=None, help="csv: the list file (columns image, mask, label[, group])")
    parser.add_argument("--force", action="store_true", help=FORCE_HELP)
    parser.add_argument("--extra-unlabeled", action="append", default=[], metavar="DIR_OR_CSV",
                        help="more unlabeled images for every budget's unlabeled pool: a folder or a CSV with an "
                             "'image' column (repeatable)")
    parser.add_argument("--near-dup-threshold", default=str(DEFAULT_THRESHOLD), metavar="R|off",
                        help="near-duplicates (Pearson r of 32x32 grayscale images >= R) share a group; sets with "
                             f"both classes are dropped; 'off' disables (default {DEFAULT_THRESHOLD})")
    parser.add_argument("--add-labels", metavar="FILE.csv",
                        help="an annotation round (columns image, mask, label): move these images of the pool of "
                             "--labels N into a new budget train/<N+k>/ of the split at --out (no raw data needed)")
    return parser


RAW_ONLY = ("dataset", "root", "csv", "group_regex", "extra_unlabeled", "draw_seed")


def main_add_labels(args: argparse.Namespace) -> int:
    """``--add-labels``: a new budget of the existing split ``--out`` (add_labels.py)."""
    from Code.DataProcess.add_labels import add_labels

    given = [f"--{name.replace('_', '-')}" for name in RAW_ONLY if getattr(args, name) not in (None, [])]
    if given or args.include_normal:
        raise UserError(f"--add-labels works on the existing split at --out; {', '.join(given) or '--include-normal'}"
                        " does not apply (no raw data is read)")
    if len(args.labels) != 1 or args.labels[0] == "all":
        raise UserError("--add-labels needs one source budget: --labels N (the budget whose pool the images leave)")
    n = args.labels[0]
    record = add_labels(args.out, n, args.add_labels, force=args.force)
    print(f"budget {record['budget']} written to {Path(args.out) / 'train' / str(record['budget'])}: budget {n} "
          f"plus {len(record['added'])} images from its pool (round recorded in {Path(args.out) / 'split.json'})")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if args.add_labels is not None:
        return main_add_labels(args)
    if args.dataset is None or args.root is None:
        raise UserError("data_split.py needs --dataset and --root (or --add-labels FILE.csv for an existing split)")
    if args.dataset == "csv" and args.csv is None:
        raise UserError("--dataset csv needs --csv FILE")
    if args.include_normal and args.dataset != "busi":
        raise UserError("--include-normal applies to --dataset busi only")
    record = split_dataset(args.dataset, args.root, args.out, args.labels, seed=args.seed,
                           test_ratio=args.test_ratio, val_ratio=args.val_ratio, group_regex=args.group_regex,
                           include_normal=args.include_normal, csv_file=args.csv, force=args.force,
                           extra_unlabeled=args.extra_unlabeled, draw_seed=args.draw_seed,
                           near_dup_threshold=parse_threshold(args.near_dup_threshold))
    print(format_summary(record))
    print(f"split written to {args.out} (seed {args.seed}, draw seed {record['draw_seed']}; sources in "
          f"{Path(args.out) / 'split.json'})")
    return 0


if __name__ == "__main__":
    run_cli(main)
