"""Repeated images in a ``--dataset csv`` list: one path spelled two ways, a row listed twice, one image's bytes
under two names (issue 21). Each would otherwise be split as two images, possibly one in test and one in train.

- Paths are normalised when the CSV is read (:func:`~Code.DataProcess.raw_readers.normalize_rel`):
  ``./img/x.png``, ``img//x.png`` and ``img/a/../x.png`` are all ``img/x.png`` (also as the default group).
- Rows naming the same image (:func:`merge_repeated_rows`): identical rows (same masks, class and group) are
  listed once, with a note; rows that disagree are refused, naming both lines.
- Identical content under two names (:func:`merge_identical_content`, SHA-256 of the image file, as
  ``--extra-unlabeled`` does): with the same class and the same merged mask the later copy is dropped, with a
  note; otherwise refused, naming both rows.
"""
from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

from Code.DataProcess.raw_readers import RawItem
from Code.DataProcess.unlabeled_pool import file_hash
from Code.errors import UserError


def _where(item: RawItem) -> str:
    return item.origin or str(item.image)


def merge_repeated_rows(items: Sequence[RawItem]) -> Tuple[List[RawItem], List[str]]:
    """(items with each image path once, notes); UserError when two rows give one image different masks, class
    or group."""
    first: Dict[object, RawItem] = {}
    kept, notes = [], []
    for item in items:
        earlier = first.get(item.image)
        if earlier is None:
            first[item.image] = item
            kept.append(item)
        elif earlier == item:
            notes.append(f"{_where(item)} repeats {_where(earlier)} ({item.image}): listed once")
        else:
            raise UserError(f"{_where(earlier)} and {_where(item)} list the same image {item.image} with different "
                            f"masks, class or group; keep one of them")
    return kept, notes


def merge_identical_content(items: Sequence[RawItem], masks: Sequence[bytes]
                            ) -> Tuple[List[RawItem], List[bytes], List[str]]:
    """(items, their merged masks, notes) with byte-identical image files listed once: the first keeps its
    place; a later copy with the same class and merged mask is dropped, one with another is a UserError."""
    seen: Dict[str, int] = {}
    kept_items, kept_masks, notes = [], [], []
    for item, mask in zip(items, masks):
        digest = file_hash(item.image)
        if digest not in seen:
            seen[digest] = len(kept_items)
            kept_items.append(item)
            kept_masks.append(mask)
            continue
        first = kept_items[seen[digest]]
        if first.label != item.label or kept_masks[seen[digest]] != mask:
            what = "class" if first.label != item.label else "mask"
            raise UserError(f"{item.image} ({_where(item)}) is the same image as {first.image} ({_where(first)}) "
                            f"but with another {what}; keep one of them")
        notes.append(f"{item.image} ({_where(item)}) is a copy of {first.image} ({_where(first)}): listed once")
    return kept_items, kept_masks, notes
