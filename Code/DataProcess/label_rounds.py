"""Reading and checking the annotator's file of ``data_split.py --add-labels FILE.csv`` (README "Which images to
label next").

FILE.csv has the columns ``image``, ``mask``, ``label`` (others, e.g. those of ``suggest.py``'s ``to_label.csv``,
are ignored): ``image`` names an image of the budget's unlabeled pool (its name in ``unlabeled.txt``; a path is
reduced to its file name), ``mask`` is the annotator's mask file (a path relative to the CSV's folder, or
absolute; read and binarised like every mask of a split, and of the image's size), ``label`` is 0/1 or
benign/malignant. Refused, with the line: an image in test or val, one already labeled in the budget, one not in
its pool, a repeated image, a missing or unreadable mask, a mask of another size, an unknown label, an empty file.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Set

from Code.errors import UserError

LABEL_WORDS = {"0": 0, "1": 1, "benign": 0, "malignant": 1}


@dataclass(frozen=True)
class NewLabel:
    """One labeled image: its pool name, the annotator's mask as {0, 1} uint8 (H×W), the class, the mask's path."""
    image: str
    mask: object
    label: int
    mask_source: str


def _rows(path: Path) -> List[Dict[str, str]]:
    if not path.is_file():
        raise UserError(f"--add-labels {path}: file not found")
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            rows = [{(k or "").strip().lower(): (v or "").strip() for k, v in row.items() if k}
                    for row in csv.DictReader(handle)]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise UserError(f"--add-labels {path}: cannot read it as CSV ({exc})") from None
    if not rows:
        raise UserError(f"--add-labels {path}: no rows (columns image, mask, label)")
    missing = [c for c in ("image", "mask", "label") if c not in rows[0]]
    if missing:
        raise UserError(f"--add-labels {path}: no column {', '.join(missing)} (columns image, mask, label)")
    return rows


def _image_name(value: str, where: str, pool: Set[str], held_out: Dict[str, str], labeled: Set[str]) -> str:
    name = Path(value.replace("\\", "/")).name
    if not name:
        raise UserError(f"{where}: empty image")
    if name in held_out:
        raise UserError(f"{where}: {name} is in {held_out[name]}; images of test and val are never added to train")
    if name in labeled:
        raise UserError(f"{where}: {name} is already labeled in this budget")
    if name not in pool:
        raise UserError(f"{where}: {name} is not in the unlabeled pool of this budget")
    return name


def _mask(value: str, base: Path, where: str, shape) -> "tuple":
    from Code.data.image_io import load_mask

    if not value:
        raise UserError(f"{where}: empty mask (the annotator's mask file)")
    path = Path(value) if Path(value).is_absolute() else base / value
    if not path.is_file():
        raise UserError(f"{where}: mask {path} not found")
    mask = load_mask(path)
    if mask.shape[:2] != tuple(shape[:2]):
        raise UserError(f"{where}: mask {path} is {mask.shape[1]}x{mask.shape[0]} but its image is "
                        f"{shape[1]}x{shape[0]}")
    return mask, value


def read_new_labels(csv_file, pool_dir: Path, pool: List[str], held_out: Dict[str, str],
                    labeled: Set[str]) -> List[NewLabel]:
    """The checked rows of ``csv_file`` (module docstring); ``pool_dir`` holds the pool's images, ``held_out`` maps
    test/val names to their part, ``labeled`` is the budget's labeled names."""
    from Code.data.image_io import load_gray

    csv_file = Path(csv_file)
    seen: Dict[str, int] = {}
    out = []
    for number, row in enumerate(_rows(csv_file), start=2):
        where = f"--add-labels {csv_file} line {number}"
        name = _image_name(row["image"], where, set(pool), held_out, labeled)
        if name in seen:
            raise UserError(f"{where}: {name} is listed twice (also on line {seen[name]})")
        seen[name] = number
        word = row["label"].lower()
        if word not in LABEL_WORDS:
            raise UserError(f"{where}: unknown label {row['label']!r} (use 0/1 or benign/malignant)")
        mask, source = _mask(row["mask"], csv_file.parent, where, load_gray(pool_dir / name).shape)
        out.append(NewLabel(name, mask, LABEL_WORDS[word], source))
    return out
