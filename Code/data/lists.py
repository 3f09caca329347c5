"""Reading and writing the split's list files (docs/design.md, "Data").

``labeled.txt``: one line per image, ``<image file> <mask file> <class id>``, fields separated by single spaces,
class 0 = benign, 1 = malignant. ``unlabeled.txt``: one image file per line. File names never contain whitespace
(``data_split.py`` renames on copy and records the original names in ``split.json``), so a line with a wrong field
count is rejected instead of guessed at. Blank lines are ignored.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, List, Tuple

from Code.errors import UserError

CLASS_NAMES = ("benign", "malignant")
LabeledEntry = Tuple[str, str, int]


def _read_lines(path: Path, allow_empty: bool = False) -> List[Tuple[int, str]]:
    """(1-based line number, stripped line) of the non-blank lines of `path`; UserError if missing or (unless
    ``allow_empty``) empty."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"list file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read list file {path}: {exc}") from None
    lines = [(number, line.strip()) for number, line in enumerate(text.splitlines(), start=1) if line.strip()]
    if not lines and not allow_empty:
        raise UserError(f"list file {path} is empty")
    return lines


def read_labeled_list(path, allow_empty: bool = False) -> List[LabeledEntry]:
    """Parse a ``labeled.txt`` into [(image file, mask file, class id)], class id in {0, 1}; an empty file is an
    error unless ``allow_empty`` (a ``truth.txt`` may list no image)."""
    entries = []
    for number, line in _read_lines(path, allow_empty):
        fields = line.split()
        if len(fields) != 3:
            raise UserError(f"{path} line {number}: expected '<image> <mask> <class id>' (3 fields separated by "
                            f"single spaces, no spaces inside names), got {len(fields)} fields")
        try:
            label = int(fields[2])
        except ValueError:
            raise UserError(f"{path} line {number}: class id {fields[2]!r} is not an integer") from None
        if label not in (0, 1):
            raise UserError(f"{path} line {number}: class id {label} is not 0 (benign) or 1 (malignant)")
        entries.append((fields[0], fields[1], label))
    return entries


def read_unlabeled_list(path) -> List[str]:
    """Parse an ``unlabeled.txt`` into [image file]."""
    names = []
    for number, line in _read_lines(path):
        fields = line.split()
        if len(fields) != 1:
            raise UserError(f"{path} line {number}: expected one image file name without spaces, "
                            f"got {len(fields)} fields")
        names.append(fields[0])
    return names


def _check_name(name: str) -> str:
    if not name or any(ch.isspace() for ch in name):
        raise UserError(f"file name {name!r} is empty or contains whitespace; list files cannot hold it")
    return name


def write_labeled_list(path, entries: Iterable[LabeledEntry]) -> None:
    """Write [(image, mask, class id)] as ``labeled.txt`` (``\\n`` line ends, trailing newline)."""
    lines = [f"{_check_name(image)} {_check_name(mask)} {int(label)}\n" for image, mask, label in entries]
    Path(path).write_text("".join(lines), encoding="utf-8", newline="\n")


def write_unlabeled_list(path, names: Iterable[str]) -> None:
    """Write [image] as ``unlabeled.txt``."""
    Path(path).write_text("".join(f"{_check_name(name)}\n" for name in names), encoding="utf-8", newline="\n")
