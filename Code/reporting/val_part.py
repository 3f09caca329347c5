"""The guard on the part ``evaluate.py --calibrate`` fits on: never the images it scores, never a split's test.

Fitting the temperature and the review thresholds on the evaluated images (or on any test images) makes the
reported calibration optimistic without a word. :func:`refuse_scored_images` stops with a one-line
:class:`~Code.errors.UserError` when the validation part ``val``

1. is the evaluated ``--data`` folder (same path once symbolic links are resolved);
2. is a split's ``test/`` part: a folder named ``test`` whose parent holds ``split.json``, or the same folder as
   ``SPLIT/test`` of the split holding ``val`` or ``--data`` (``split.json`` in the part or up to three folders
   above, as data_split.py writes it);
3. lists the same images (the names of its ``labeled.txt``, as a set) as ``--data`` or as the test part of such a
   split (its ``split.json`` entries with ``part: test``, else ``SPLIT/test/labeled.txt``) — a copy of them;
4. lists any image that its own split's ``split.json`` puts in the test part (names are unique within a split).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import FrozenSet, Optional

from Code.errors import UserError


def split_of(part: Path) -> Optional[Path]:
    """The split folder holding ``part``: ``part`` itself or one of the three folders above it with a split.json."""
    part = part.resolve()
    for folder in [part, *list(part.parents)[:3]]:
        if (folder / "split.json").is_file():
            return folder
    return None


def image_names(part: Path) -> FrozenSet[str]:
    """The image names listed in ``part/labeled.txt``."""
    from Code.data import read_labeled_list

    return frozenset(entry[0] for entry in read_labeled_list(part / "labeled.txt"))


def split_test_names(split: Path) -> FrozenSet[str]:
    """The test images of ``split``: its ``split.json`` entries in the test part, else ``test/labeled.txt``."""
    try:
        files = json.loads((split / "split.json").read_text()).get("files", {})
        names = frozenset(name for name, entry in files.items() if entry.get("part") == "test")
    except (OSError, ValueError, AttributeError):
        names = frozenset()
    if not names and (split / "test" / "labeled.txt").is_file():
        names = image_names(split / "test")
    return names


def refuse_scored_images(val: Path, data: Path, what: str = "--val") -> None:
    """A one-line UserError when ``val`` is, or copies, the evaluated ``data`` or a split's test part; ``what``
    names ``val`` in the message."""
    why = "the temperature and review thresholds must be fitted on images that are not scored (use the split's val/)"
    resolved = val.resolve()
    if resolved == data.resolve():
        raise UserError(f"{what} {val} is the --data folder being evaluated: {why}")
    own = split_of(val)
    for split in dict.fromkeys(s for s in (own, split_of(data)) if s is not None):
        if resolved == (split / "test").resolve():
            raise UserError(f"{what} {val} is the test part of the split {split}: {why}")
    names = image_names(val)
    if names and names == image_names(data):
        raise UserError(f"{what} {val} lists the same {len(names)} images as the evaluated --data {data}: {why}")
    for split in dict.fromkeys(s for s in (own, split_of(data)) if s is not None):
        test = split_test_names(split)
        if names and names == test:
            raise UserError(f"{what} {val} lists the same {len(names)} images as the test part of the split "
                            f"{split}: {why}")
        overlap = names & test if split == own else frozenset()
        if overlap:
            raise UserError(f"{what} {val}: {len(overlap)} of its {len(names)} images belong to the test part of "
                            f"the split {split} (e.g. {sorted(overlap)[0]}): {why}")
