"""Unlabeled-only images added to every budget's unlabeled pool of a split (README "Your own data").

Two sources, besides the train images whose labels a budget hides:

- rows of a ``--dataset csv`` list whose ``mask`` and ``label`` are both empty (an image with no mask and no class);
- ``--extra-unlabeled DIR_OR_CSV`` (repeatable): every image below a folder (recursively, sorted), or the ``image``
  column of a CSV file (paths relative to the CSV's folder; other columns ignored).

Such images never go to test, val or a labeled budget. Every one is decoded at split time (a corrupt file is an
error naming it, not a failure of a later training run). Duplicates are found by content (SHA-256 of the file
bytes): an image identical to a held-out (test / val) image is refused with an error naming both files; one
identical to a train image or to an earlier pool image is listed once (the later copy is dropped and reported).
An unlabeled CSV row whose ``group`` is a held-out image's group is left out (frames of a test case must not be
trained on). ``split.json`` gets, per pool image, ``origin`` (which CSV row or ``--extra-unlabeled`` argument)
and ``source`` (its path), and ``unlabeled_sources`` counts the pool by origin.
"""
from __future__ import annotations

import csv
import hashlib
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from Code.data.image_io import load_gray
from Code.data.lists import read_unlabeled_list, write_unlabeled_list
from Code.DataProcess.raw_readers import IMAGE_SUFFIXES, RawItem, normalize_rel
from Code.errors import UserError


@dataclass(frozen=True)
class PoolImage:
    """One unlabeled-only image: its file, where it came from (for split.json) and its group (CSV rows only)."""
    image: Path
    origin: str
    group: Optional[str] = None


def file_hash(path: Path) -> str:
    """SHA-256 of the file's bytes (hex)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _csv_rows(csv_path: Path) -> List[Dict[str, str]]:
    with open(csv_path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        return [{(k or "").strip().lower(): (v or "").strip() for k, v in row.items() if k} for row in reader]


def read_csv_unlabeled(root, csv_file) -> List[PoolImage]:
    """The rows of a ``--dataset csv`` list with an empty ``mask`` and an empty ``label`` (paths under ``root``)."""
    images = []
    for number, row in enumerate(_csv_rows(Path(csv_file)), start=2):
        if row.get("mask") or row.get("label"):
            continue
        image = Path(root) / normalize_rel(row.get("image", ""))
        if not row.get("image") or not image.is_file():
            raise UserError(f"{csv_file} line {number}: unlabeled image {image} not found")
        images.append(PoolImage(image, f"{csv_file} line {number} (no mask, no label)", row.get("group") or None))
    return images


def read_extra(source: str) -> List[PoolImage]:
    """The images of one ``--extra-unlabeled`` argument: a folder (recursive) or a CSV with an ``image`` column."""
    path = Path(source)
    origin = f"--extra-unlabeled {source}"
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise UserError(f"--extra-unlabeled {source}: no images ({', '.join(IMAGE_SUFFIXES)}) in that folder")
        return [PoolImage(p, origin) for p in files]
    if path.is_file() and path.suffix.lower() == ".csv":
        rows = _csv_rows(path)
        if rows and "image" not in rows[0]:
            raise UserError(f"--extra-unlabeled {source}: no 'image' column")
        images = []
        for number, row in enumerate(rows, start=2):
            image = path.parent / normalize_rel(row["image"])
            if not image.is_file():
                raise UserError(f"--extra-unlabeled {source} line {number}: image {image} not found")
            images.append(PoolImage(image, origin))
        return images
    raise UserError(f"--extra-unlabeled {source}: not a folder of images or a .csv file")


def check_decodes(images: Sequence[PoolImage]) -> None:
    """Decode every image now, so that a corrupt file stops the split (one line naming it and where it was
    listed) instead of a training run later."""
    for image in images:
        try:
            load_gray(image.image)
        except UserError as exc:
            raise UserError(f"{exc}; listed by {image.origin}") from None


class UnlabeledPool:
    """The deduplicated unlabeled-only images of a split, validated before anything is written."""

    def __init__(self, images: Sequence[PoolImage], names: Sequence[str], notes: Sequence[str]):
        self.images, self.names, self.notes = list(images), list(names), list(notes)

    @classmethod
    def collect(cls, items: Sequence[RawItem], held_out: Dict[int, str], candidates: Sequence[PoolImage],
                names_for) -> "UnlabeledPool":
        """Check ``candidates`` against the data set's images (``held_out``: item index → test / val) and each
        other; ``names_for(pool)`` gives their output file names. UserError for a copy of a held-out image."""
        if not candidates:
            return cls([], [], [])
        known = {file_hash(item.image): i for i, item in enumerate(items)}
        held_groups = {items[i].group: part for i, part in held_out.items()}
        kept: List[PoolImage] = []
        seen: Dict[str, Path] = {}
        notes = []
        for image in candidates:
            digest = file_hash(image.image)
            if digest in known and known[digest] in held_out:
                other = items[known[digest]].image
                raise UserError(f"unlabeled image {image.image} ({image.origin}) is a copy of {other}, which is in "
                                f"the {held_out[known[digest]]} part; remove it from the unlabeled images")
            if digest in known or digest in seen:
                first = items[known[digest]].image if digest in known else seen[digest]
                notes.append(f"{image.image} is a copy of {first}: listed once")
                continue
            if image.group is not None and image.group in held_groups:
                notes.append(f"{image.image} left out: its group {image.group!r} is in the "
                             f"{held_groups[image.group]} part")
                continue
            seen[digest] = image.image
            kept.append(image)
        return cls(kept, names_for(kept), notes)

    def write(self, out: Path, budgets: Sequence[int]) -> None:
        """Copy the pool into every ``train/<N>/unlabeled/image/`` and append it to its ``unlabeled.txt``."""
        for n in budgets:
            folder = Path(out) / "train" / str(n) / "unlabeled"
            listed = read_unlabeled_list(folder / "unlabeled.txt") if (folder / "unlabeled.txt").stat().st_size else []
            for image, name in zip(self.images, self.names):
                shutil.copyfile(image.image, folder / "image" / name)
            write_unlabeled_list(folder / "unlabeled.txt", [*listed, *self.names])

    def annotate(self, record: dict) -> None:
        """Add the pool to a split.json record: file entries, counts per unlabeled part, sources, dropped copies."""
        for image, name in zip(self.images, self.names):
            record["files"][name] = {"source": str(image.image), "origin": image.origin, "part": "unlabeled-only",
                                     "label": None, "class": None, "group": image.group, "mask": None, "masks": []}
        record["files"] = dict(sorted(record["files"].items()))
        for part, counts in record["counts"].items():
            if part.endswith("/unlabeled"):
                counts["unlabeled_only"] = len(self.images)
                counts["total"] += len(self.images)
        sources: Dict[str, int] = {}
        for image in self.images:
            key = image.origin if image.origin.startswith("--extra") else "csv rows without mask and label"
            sources[key] = sources.get(key, 0) + 1
        record["unlabeled_sources"] = sources
        record["unlabeled_notes"] = self.notes
