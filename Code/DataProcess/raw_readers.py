"""Readers of raw data sets into a flat list of :class:`RawItem` (image, mask files, class, group);
layouts in docs/design.md, "Data".

- ``sztus``: ``<root>/{benign,malignant}/image/<name>`` with ``<root>/{benign,malignant}/mask/<name>`` (same name;
  a mask with another extension is accepted if the stem matches). Group = case id: the name's stem without its
  last ``-<frame>`` (``L1-0001-2.png`` → ``L1-0001``; a stem without ``-<digits>`` is its own group).
- ``busi``: ``Dataset_BUSI_with_GT/{benign,malignant[,normal]}/<cls> (N).png`` with ``<cls> (N)_mask.png`` and
  optional ``_mask_1.png``, ``_mask_2.png`` … merged with OR; ``--root`` is that folder or the one holding it.
  Each image is its own group (BUSI has no patient ids). ``normal`` (empty masks, no lesion) is read only when
  asked for and gets class 0: the classifier separates malignant from not malignant.
- ``csv``: columns ``image,mask,label[,group]``, paths relative to ``--root``; label 0/1 or benign/malignant;
  several masks of one image may be joined with ``;`` (merged with OR); paths are normalised (:func:`normalize_rel`)
  and repeated images merged or refused (:mod:`Code.DataProcess.duplicates`). A row with empty ``mask`` and
  ``label`` is an unlabeled-only image, read by :mod:`Code.DataProcess.unlabeled_pool`, not here.

A ``--group-regex`` overrides the group: its first capture group (or the whole match) of the file stem; a stem
it does not match is an error, so that a typo cannot silently turn off group-aware splitting.
"""
from __future__ import annotations

import csv
import posixpath
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Tuple

from Code.errors import UserError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
SZTUS_CASE = re.compile(r"^(.+)-\d+$")
LABEL_WORDS = {"0": 0, "1": 1, "benign": 0, "malignant": 1}


@dataclass(frozen=True)
class RawItem:
    """One labeled source image: `masks` are merged with OR; `source_class` is the folder or CSV label word;
    `origin` (CSV rows: ``<csv> line <n>``) names it in messages and is not compared."""
    image: Path
    masks: Tuple[Path, ...]
    label: int
    group: str
    source_class: str
    origin: str = field(default="", compare=False)


def normalize_rel(text: str) -> str:
    """A CSV path cell with ``.``/``..`` segments and repeated or trailing slashes resolved (POSIX rules), so that
    ``./img/x.png`` and ``img//x.png`` are ``img/x.png``; ``""`` stays ``""``."""
    return posixpath.normpath(text) if text else text


def _images_in(folder: Path) -> List[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _regex_group(pattern: Optional[str], stem: str, default: str) -> str:
    if pattern is None:
        return default
    try:
        match = re.search(pattern, stem)
    except re.error as exc:
        raise UserError(f"--group-regex {pattern!r} is not a valid regular expression: {exc}") from None
    if match is None:
        raise UserError(f"--group-regex {pattern!r} does not match the file name {stem!r}")
    return match.group(1) if match.groups() else match.group(0)


def _require_root(root: Path) -> Path:
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"--root {root} does not exist or is not a folder")
    return root


def read_sztus(root, group_regex: Optional[str] = None) -> List[RawItem]:
    """Items of an SZ-TUS-layout folder (the phantom's layout too)."""
    root = _require_root(root)
    items = []
    for label, cls in enumerate(("benign", "malignant")):
        image_dir, mask_dir = root / cls / "image", root / cls / "mask"
        if not image_dir.is_dir():
            raise UserError(f"{image_dir} not found (expected <root>/{{benign,malignant}}/{{image,mask}}/)")
        masks_by_stem = {p.stem: p for p in _images_in(mask_dir)} if mask_dir.is_dir() else {}
        for image in _images_in(image_dir):
            mask = mask_dir / image.name if (mask_dir / image.name).is_file() else masks_by_stem.get(image.stem)
            if mask is None:
                raise UserError(f"image {image} has no mask (expected {mask_dir / image.name})")
            case = SZTUS_CASE.match(image.stem)
            group = _regex_group(group_regex, image.stem, case.group(1) if case else image.stem)
            items.append(RawItem(image, (mask,), label, group, cls))
    return items


BUSI_MASK = re.compile(r"^(?P<stem>.+)_mask(?:_(?P<index>\d+))?$")


def read_busi(root, include_normal: bool = False, group_regex: Optional[str] = None) -> List[RawItem]:
    """Items of a BUSI download; multi-lesion masks listed in order _mask, _mask_1, _mask_2, …"""
    root = _require_root(root)
    base = root / "Dataset_BUSI_with_GT" if (root / "Dataset_BUSI_with_GT").is_dir() else root
    classes = [("benign", 0), ("malignant", 1)] + ([("normal", 0)] if include_normal else [])
    items = []
    for cls, label in classes:
        folder = base / cls
        if not folder.is_dir():
            raise UserError(f"{folder} not found (expected --root to be or to hold Dataset_BUSI_with_GT/)")
        files = _images_in(folder)
        masks = {}
        for path in files:
            match = BUSI_MASK.match(path.stem)
            if match:
                masks.setdefault(match["stem"], []).append((int(match["index"] or 0), path))
        for image in (p for p in files if not BUSI_MASK.match(p.stem)):
            found = sorted(masks.get(image.stem, []))
            if not found:
                raise UserError(f"image {image} has no mask (expected {folder / (image.stem + '_mask.png')})")
            group = _regex_group(group_regex, image.stem, f"{cls}/{image.stem}")
            items.append(RawItem(image, tuple(p for _, p in found), label, group, cls))
    return items


def _csv_label(value: str, where: str) -> Tuple[int, str]:
    word = value.strip().lower()
    if word not in LABEL_WORDS:
        raise UserError(f"{where}: unknown label {value!r} (use 0/1 or benign/malignant)")
    return LABEL_WORDS[word], ("benign", "malignant")[LABEL_WORDS[word]]


def read_csv(root, csv_file, group_regex: Optional[str] = None) -> List[RawItem]:
    """Items listed in a CSV (columns image, mask, label, optional group)."""
    root = _require_root(root)
    csv_path = Path(csv_file) if csv_file else None
    if csv_path is None or not csv_path.is_file():
        raise UserError(f"--csv {csv_file} not found (required for --dataset csv)")
    with open(csv_path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        columns = [c.strip().lower() for c in (reader.fieldnames or [])]
        missing = {"image", "mask", "label"} - set(columns)
        if missing:
            raise UserError(f"{csv_path}: missing column(s) {', '.join(sorted(missing))} (need image, mask, label)")
        rows = [{k.strip().lower(): (v or "").strip() for k, v in row.items() if k} for row in reader]
    items = []
    for number, row in enumerate(rows, start=2):
        where = f"{csv_path} line {number}"
        if not row["mask"] and not row["label"]:
            continue  # an unlabeled-only image: read by unlabeled_pool.read_csv_unlabeled
        label, cls = _csv_label(row["label"], where)
        relative = normalize_rel(row["image"])
        image = root / relative
        if not image.is_file():
            raise UserError(f"{where}: image {image} not found")
        masks = tuple(root / normalize_rel(m.strip()) for m in row["mask"].split(";") if m.strip())
        for mask in masks or (root / "<empty mask column>",):
            if not mask.is_file():
                raise UserError(f"{where}: image {image} has no mask ({mask} not found)")
        group = row.get("group") or _regex_group(group_regex, image.stem, relative)
        items.append(RawItem(image, masks, label, group, cls, where))
    return items


def read_raw(dataset: str, root, group_regex: Optional[str] = None, include_normal: bool = False,
             csv_file=None) -> List[RawItem]:
    """Dispatch on dataset ∈ {sztus, busi, csv}; UserError if nothing is found."""
    if dataset == "sztus":
        items = read_sztus(root, group_regex)
    elif dataset == "busi":
        items = read_busi(root, include_normal, group_regex)
    elif dataset == "csv":
        items = read_csv(root, csv_file, group_regex)
    else:
        raise UserError(f"unknown --dataset {dataset!r} (choose sztus, busi or csv)")
    if not items:
        raise UserError(f"no images found under --root {root}")
    return items
