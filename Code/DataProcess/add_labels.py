"""``data_split.py --add-labels FILE.csv --out SPLIT --labels N``: a new budget from an annotation round.

The images of FILE.csv (checked by ``label_rounds.py``) leave the unlabeled pool of ``SPLIT/train/N/`` and join
its labeled set in a new budget ``SPLIT/train/<N+k>/`` (k = the number of rows), written beside the others:

    train/<N+k>/labeled/{image,mask}/, labeled.txt      = train/N/labeled/ + the k new images and their masks
    train/<N+k>/unlabeled/image/, unlabeled.txt         = train/N/unlabeled/ − the k images (same order)
    train/<N+k>/unlabeled/{mask/,truth.txt}             the same, where train/N/unlabeled/ has them (diagnostics)

Images are copied byte for byte from the split itself (the raw data is not needed again); the new masks are
written as 0/255 PNG named ``<image stem>.png``; ``labeled.txt`` is ordered by (class, name) like data_split.py's.
Test, val, every earlier budget and every other file stay byte-identical; ``split.json`` gains the round in
``rounds`` (budget, from, csv, the added images with label and mask file as given; no date) and the counts of the
new parts. The split folder must be a data_split.py output. ``train/<N+k>/`` is built in a temporary folder and
renamed into place; an existing one is refused, and replaced with ``--force`` only when an earlier
``--add-labels`` wrote it (its round is in ``split.json``) and no later round was made from it.
"""
from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Dict, List, Optional

import cv2
import numpy as np

from Code.data.lists import read_labeled_list, read_unlabeled_list, write_labeled_list, write_unlabeled_list
from Code.DataProcess.label_rounds import NewLabel, read_new_labels
from Code.DataProcess.splitting import TRUTH_LIST
from Code.errors import UserError
from Code.outputs import LEGACY, read_marker, write_atomically


def _names(path: Path) -> List[str]:
    return [entry[0] for entry in read_labeled_list(path, allow_empty=True)] if path.is_file() else []


def _load_split(split: Path, n: int) -> dict:
    """split.json of ``split`` after checking that it is a data_split.py output holding budget ``n``."""
    if not split.is_dir():
        raise UserError(f"--out {split}: split folder not found")
    if read_marker(split) != "data_split.py" and not LEGACY["data_split.py"](split):
        raise UserError(f"--out {split} is not a split written by data_split.py (no split.json / marker)")
    try:
        record = json.loads((split / "split.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot read {split / 'split.json'}: {exc}") from None
    if not (split / "train" / str(n) / "labeled" / "labeled.txt").is_file():
        budgets = sorted((p.name for p in (split / "train").glob("*") if p.name.isdigit()), key=int)
        raise UserError(f"--labels {n}: no budget train/{n}/ in {split} (has: {', '.join(budgets)})")
    return record


def _check_target(split: Path, record: dict, budget: int, force: bool) -> None:
    target = split / "train" / str(budget)
    if not target.exists():
        return
    rounds = record.get("rounds", [])
    if not any(r.get("budget") == budget for r in rounds):
        raise UserError(f"{target} exists and was not written by --add-labels (a budget of the split itself); it "
                        "is never replaced, not even with --force")
    later = [r["budget"] for r in rounds if r.get("from") == budget]
    if later:
        raise UserError(f"{target} exists and budget {later[0]} was made from it; it is never replaced")
    if not force:
        raise UserError(f"{target} exists (an earlier --add-labels round); add --force to replace it")


def _mask_png(mask: np.ndarray) -> bytes:
    ok, encoded = cv2.imencode(".png", (mask > 0).astype(np.uint8) * np.uint8(255))
    if not ok:
        raise UserError("cannot encode a mask as PNG")
    return encoded.tobytes()


def _write_labeled(source: Path, folder: Path, new: List[NewLabel]) -> list:
    (folder / "image").mkdir(parents=True)
    (folder / "mask").mkdir()
    entries = read_labeled_list(source / "labeled" / "labeled.txt")
    for image, mask, _ in entries:
        shutil.copyfile(source / "labeled" / "image" / image, folder / "image" / image)
        shutil.copyfile(source / "labeled" / "mask" / mask, folder / "mask" / mask)
    for item in new:
        mask_name = Path(item.image).stem + ".png"
        shutil.copyfile(source / "unlabeled" / "image" / item.image, folder / "image" / item.image)
        (folder / "mask" / mask_name).write_bytes(_mask_png(item.mask))
        entries.append((item.image, mask_name, item.label))
    entries.sort(key=lambda e: (e[2], e[0]))
    write_labeled_list(folder / "labeled.txt", entries)
    return entries


def _write_unlabeled(source: Path, folder: Path, pool: List[str], taken: set) -> List[str]:
    (folder / "image").mkdir(parents=True)
    rest = [name for name in pool if name not in taken]
    for name in rest:
        shutil.copyfile(source / "image" / name, folder / "image" / name)
    write_unlabeled_list(folder / "unlabeled.txt", rest)
    if (source / TRUTH_LIST).is_file():
        (folder / "mask").mkdir()
        truth = [e for e in read_labeled_list(source / TRUTH_LIST, allow_empty=True) if e[0] not in taken]
        for _, mask, _ in truth:
            shutil.copyfile(source / "mask" / mask, folder / "mask" / mask)
        write_labeled_list(folder / TRUTH_LIST, truth)
    return rest


def _counts(record: dict, labels: Dict[str, Optional[int]], pool: bool) -> Dict[str, int]:
    """Counts of one part like split.json's: per class, total, groups (a pool also counts its unlabeled-only
    images, label None)."""
    files = record.get("files", {})
    counts = {"benign": sum(v == 0 for v in labels.values()), "malignant": sum(v == 1 for v in labels.values()),
              "total": len(labels), "groups": len({(files.get(n) or {}).get("group") or n for n in labels})}
    if pool:
        counts["unlabeled_only"] = sum(v is None for v in labels.values())
    return counts


def _held_out(split: Path) -> Dict[str, str]:
    held = {name: "val" for name in _names(split / "val" / "labeled.txt")}
    held.update({name: "test" for name in _names(split / "test" / "labeled.txt")})
    return held


def _pool(source: Path) -> List[str]:
    listed = source / "unlabeled" / "unlabeled.txt"
    if not listed.is_file() or not listed.read_text(encoding="utf-8").strip():
        raise UserError(f"the unlabeled pool {listed} is empty or missing: nothing to add labels to")
    return read_unlabeled_list(listed)


def _build(split: Path, source: Path, budget: int, new: List[NewLabel], pool: List[str]) -> tuple:
    """Write the new budget into a temporary folder of ``split/train``; ``(folder, labeled entries, pool left)``."""
    folder = Path(tempfile.mkdtemp(prefix=f".{budget}.", suffix=".partial", dir=split / "train"))
    try:
        entries = _write_labeled(source, folder / "labeled", new)
        rest = _write_unlabeled(source / "unlabeled", folder / "unlabeled", pool, {item.image for item in new})
    except BaseException:
        shutil.rmtree(folder)
        raise
    return folder, entries, rest


def _swap_in(built: Path, target: Path) -> None:
    """Rename ``built`` to ``target``; an existing ``target`` (checked replaceable) is moved aside, then removed."""
    old = None
    if target.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=target.parent))
        target.rename(old / target.name)
    built.rename(target)
    if old is not None:
        shutil.rmtree(old)


def add_labels(split, n: int, csv_file, force: bool = False) -> dict:
    """Add the rows of ``csv_file`` to budget ``n`` of ``split`` as the new budget n + k (module docstring);
    everything is checked before anything is written. Returns the round recorded in split.json."""
    split = Path(split)
    record = _load_split(split, n)
    source = split / "train" / str(n)
    pool = _pool(source)
    labeled = {e[0] for e in read_labeled_list(source / "labeled" / "labeled.txt")}
    new = read_new_labels(csv_file, source / "unlabeled" / "image", pool, _held_out(split), labeled)
    budget = n + len(new)
    _check_target(split, record, budget, force)
    built, entries, rest = _build(split, source, budget, new, pool)
    _swap_in(built, split / "train" / str(budget))
    files = record.get("files", {})
    record["counts"][f"train/{budget}/labeled"] = _counts(record, {e[0]: e[2] for e in entries}, pool=False)
    record["counts"][f"train/{budget}/unlabeled"] = _counts(
        record, {name: (files.get(name) or {}).get("label") for name in rest}, pool=True)
    round_ = {"budget": budget, "from": n, "csv": str(csv_file),
              "added": [{"image": i.image, "label": i.label, "mask": i.mask_source} for i in new]}
    record["rounds"] = [r for r in record.get("rounds", []) if r.get("budget") != budget] + [round_]
    text = json.dumps(record, indent=1, sort_keys=True) + "\n"
    write_atomically(split / "split.json", lambda tmp: tmp.write_text(text, encoding="utf-8"))
    return round_
