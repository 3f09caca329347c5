"""TensorBoard scalars of a run as one small CSV (``step`` + one column per tag), for committing curves under
``results/`` without the event files.

    python -m Code.reporting.scalars RUN/tensorboard OUT.csv [--every K] [--tags loss/infonce health/embed_std]

Rows are the steps at which any chosen tag was logged (every K-th logged step of the run with ``--every``); a tag
not logged at a step is left empty. Tags default to every scalar tag in the folder.
"""
from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from Code.errors import UserError


def read_scalars(tb_dir: Path, tags: Optional[Sequence[str]] = None) -> Dict[str, Dict[int, float]]:
    """``{tag: {step: value}}`` of the scalar events under ``tb_dir`` (the last value wins for a repeated step)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    if not Path(tb_dir).is_dir():
        raise UserError(f"not a TensorBoard folder: {tb_dir}")
    events = EventAccumulator(str(tb_dir), size_guidance={"scalars": 0})
    events.Reload()
    known = events.Tags()["scalars"]
    missing = [tag for tag in tags or () if tag not in known]
    if missing:
        raise UserError(f"{tb_dir} has no scalar tag {', '.join(missing)} (it has: {', '.join(known) or 'none'})")
    return {tag: {event.step: event.value for event in events.Scalars(tag)} for tag in (tags or known)}


def scalars_rows(scalars: Dict[str, Dict[int, float]], every: int = 1) -> List[Dict[str, object]]:
    """One row per logged step (every ``every``-th of them), columns ``step`` then the tags in order."""
    steps = sorted(set().union(*scalars.values())) if scalars else []
    return [{"step": step, **{tag: values.get(step, "") for tag, values in scalars.items()}}
            for step in steps[every - 1::every]]


def write_scalars_csv(tb_dir: Path, out: Path, tags: Optional[Sequence[str]] = None, every: int = 1) -> int:
    """Write the CSV; returns the number of rows."""
    if every < 1:
        raise UserError(f"--every must be at least 1 (got {every})")
    scalars = read_scalars(tb_dir, tags)
    rows = scalars_rows(scalars, every)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["step", *scalars])
        writer.writeheader()
        writer.writerows(rows)
    return len(rows)


def read_scalars_csv(path: Path) -> Dict[str, Dict[int, float]]:
    """The inverse of :func:`write_scalars_csv`: ``{tag: {step: value}}``, empty cells (a tag not logged at that
    step) left out."""
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        tags = [name for name in reader.fieldnames or [] if name != "step"]
        try:
            rows = [(int(row["step"]), row) for row in reader]
            return {tag: {step: float(row[tag]) for step, row in rows if row[tag]} for tag in tags}
        except (KeyError, TypeError, ValueError) as exc:
            raise UserError(f"{path}: not a scalars table (step, tag columns): {exc}") from None


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("tensorboard", type=Path, help="a run's tensorboard/ folder")
    parser.add_argument("out", type=Path, help="CSV file to write")
    parser.add_argument("--tags", nargs="+", help="scalar tags (default: all)")
    parser.add_argument("--every", type=int, default=1, help="keep every K-th logged step")
    args = parser.parse_args(argv)
    try:
        rows = write_scalars_csv(args.tensorboard, args.out, args.tags, args.every)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"{args.out}: {rows} rows")
    return 0


if __name__ == "__main__":
    sys.exit(main())
