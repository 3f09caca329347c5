"""Near-duplicate images of a data set: found by a downscaled-image correlation and kept on one side of a split.

Signature of an image: grayscale, resized to 32×32 (``cv2.INTER_AREA``), z-normalised and divided by √1024, so that
the dot product of two signatures is their Pearson correlation r ∈ [−1, 1]. A pair with r ≥ threshold
(``--near-dup-threshold``, default 0.98; ``off`` disables) is an edge; the pairs come from chunked matrix products
(``CHUNK`` rows × n at a time, O(CHUNK · n) memory, so 10 000 images need ~40 MB per chunk). A flat image (zero
variance) has no correlation with anything and is never paired.

Connected sets: the connected components of the edges joined with the existing groups (case ids of sztus, the
``group`` column of csv), found with a union-find. Every image of a set gets one group id (the smallest original
group id in it, so that the split's whole-group rule keeps the set on one side of test / val / train and of
labeled / unlabeled). A set holding images of **both classes** (one image labeled twice, e.g. BUSI's
``malignant (145).png`` and ``benign (433).png``) cannot be trusted either way: every image of it is **dropped**
from the split, listed in ``split.json`` (``near_duplicates.dropped_conflicting``) and counted in the summary —
dropping rather than refusing, because public sets ship such copies and the user cannot fix them upstream.

Unlabeled-only images (csv rows without mask and label, ``--extra-unlabeled``) that are near-duplicates of a test or
val image are left out of the pool with a note (training on a copy of a held-out image would leak it).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from Code.data.image_io import load_gray
from Code.errors import UserError

SIZE = 32  # signature side (pixels)
CHUNK = 1024  # rows of the signature matrix per product
DEFAULT_THRESHOLD = 0.98


def parse_threshold(text: str) -> Optional[float]:
    """A ``--near-dup-threshold`` value: ``off`` → None, else a correlation in (0, 1]; UserError otherwise."""
    if str(text).strip().lower() == "off":
        return None
    try:
        value = float(text)
    except ValueError:
        raise UserError(f"--near-dup-threshold {text!r} is not a number or 'off'") from None
    if not 0.0 < value <= 1.0:
        raise UserError(f"--near-dup-threshold {text}: a correlation in (0, 1], or 'off'")
    return value


def signatures(paths: Sequence[Path]) -> np.ndarray:
    """(n, SIZE²) float32, rows z-normalised and scaled by 1/√SIZE² (flat images: a zero row)."""
    rows = np.zeros((len(paths), SIZE * SIZE), np.float32)
    for k, path in enumerate(paths):
        small = cv2.resize(load_gray(path), (SIZE, SIZE), interpolation=cv2.INTER_AREA).astype(np.float32).ravel()
        std = small.std()
        if std > 1e-6:
            rows[k] = (small - small.mean()) / (std * np.sqrt(small.size))
    return rows


def similar_pairs(sig: np.ndarray, threshold: float, chunk: int = CHUNK) -> Iterator[Tuple[int, int]]:
    """Every pair (i, j), i < j, with sig[i] · sig[j] ≥ threshold, in row order."""
    for start in range(0, len(sig), chunk):
        block = sig[start:start + chunk] @ sig.T  # (chunk, n) Pearson correlations
        rows, cols = np.nonzero(block >= threshold)
        for r, c in zip(rows.tolist(), cols.tolist()):
            if c > start + r:
                yield start + r, c


def best_matches(query: np.ndarray, reference: np.ndarray, threshold: float, chunk: int = CHUNK) -> List[int]:
    """Per query row: the index of its most correlated reference row if r ≥ threshold, else −1."""
    found = []
    for start in range(0, len(query), chunk):
        if len(reference) == 0:
            found += [-1] * len(query[start:start + chunk])
            continue
        block = query[start:start + chunk] @ reference.T
        best = block.argmax(axis=1)
        found += [int(b) if block[k, b] >= threshold else -1 for k, b in enumerate(best)]
    return found


class _UnionFind:
    def __init__(self, n: int):
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, i: int, j: int) -> None:
        a, b = self.find(i), self.find(j)
        if a != b:
            self.parent[max(a, b)] = min(a, b)


def _connected_sets(items: Sequence, sig: np.ndarray, threshold: float) -> Tuple[List[List[int]], set]:
    """(connected sets holding at least one near-duplicate pair, as sorted index lists in order of their smallest
    index; the indices that are in a pair): components of near-duplicate edges ∪ same-group links."""
    union = _UnionFind(len(items))
    first_of_group: Dict[str, int] = {}
    for k, item in enumerate(items):
        union.union(first_of_group.setdefault(item.group, k), k)
    linked = set()
    for i, j in similar_pairs(sig, threshold):
        union.union(i, j)
        linked.update((i, j))
    members: Dict[int, List[int]] = {union.find(k): [] for k in linked}
    for k in range(len(items)):
        if union.find(k) in members:
            members[union.find(k)].append(k)
    return [members[r] for r in sorted(members)], linked


@dataclass
class NearDuplicateResult:
    """Items after grouping (conflicting sets removed) and what split.json records under ``near_duplicates``."""
    items: list
    record: dict
    notes: List[str]


def _name(item, root: Path) -> str:
    try:
        return item.image.relative_to(root).as_posix()
    except ValueError:
        return item.image.as_posix()


def group_near_duplicates(items: Sequence, threshold: Optional[float], root) -> NearDuplicateResult:
    """Merge the groups of near-duplicate items (RawItem-like: image, label, group) and drop every connected set
    with both classes. ``record``: threshold; ``sets`` / ``images``: how many connected sets / images in a
    near-duplicate pair (conflicting sets included); ``members``: those images per set; ``sets_joining_groups``:
    sets that joined several original groups; ``dropped_conflicting``: every image of each dropped set; names are
    source paths relative to ``root``. ``threshold`` None: nothing changes."""
    if threshold is None:
        return NearDuplicateResult(list(items), {"threshold": "off"}, [])
    members, linked = _connected_sets(items, signatures([item.image for item in items]), threshold)
    sets, conflicting, dropped, new_group, merged = [], [], set(), {}, 0
    labels_of: Dict[str, set] = {}
    for item in items:
        labels_of.setdefault(item.group, set()).add(item.label)
    mixed_groups = {g for g, labels in labels_of.items() if len(labels) > 1}
    for indices in members:
        if any(items[k].group in mixed_groups for k in indices):
            continue  # a case with both classes: left as it is, for the split's own one-line refusal
        sets.append(sorted(_name(items[k], Path(root)) for k in indices if k in linked))
        if len({items[k].label for k in indices}) > 1:
            conflicting.append(sorted(_name(items[k], Path(root)) for k in indices))
            dropped.update(indices)
            continue
        groups = {items[k].group for k in indices}
        merged += len(groups) > 1
        group = min(groups)
        new_group.update({k: group for k in indices})
    kept = [replace(item, group=new_group.get(k, item.group)) for k, item in enumerate(items) if k not in dropped]
    record = {"threshold": threshold, "sets": len(sets), "images": sum(len(s) for s in sets),
              "sets_joining_groups": merged, "members": sets, "dropped_conflicting": conflicting,
              "dropped_images": sum(len(s) for s in conflicting)}
    notes = [f"near-duplicates with both classes dropped from the split: {', '.join(names)}" for names in conflicting]
    return NearDuplicateResult(kept, record, notes)


def drop_pool_near_held_out(candidates: Sequence, held_out: Sequence[Tuple[object, str]],
                            threshold: Optional[float]) -> Tuple[list, List[str]]:
    """(kept candidates, notes): unlabeled-only candidates (``.image``) that are near-duplicates of a held-out
    item (``held_out``: (item with ``.image``, part name test / val) pairs) are left out. Byte-identical copies are
    kept here, so that the pool's own check refuses them with an error (unlabeled_pool.py)."""
    if threshold is None or not candidates or not held_out:
        return list(candidates), []
    matches = best_matches(signatures([c.image for c in candidates]),
                           signatures([item.image for item, _ in held_out]), threshold)
    kept, notes = [], []
    for candidate, match in zip(candidates, matches):
        other, part = held_out[match] if match >= 0 else (None, "")
        if other is None or candidate.image.read_bytes() == other.image.read_bytes():
            kept.append(candidate)
            continue
        notes.append(f"{candidate.image} left out: a near-duplicate of {other.image}, which is in the {part} part")
    return kept, notes


def near_duplicate_summary(record: dict) -> List[str]:
    """The summary lines of a split.json's ``near_duplicates`` (none for a split made without it)."""
    near = record.get("near_duplicates")
    if near is None:
        return []
    if near["threshold"] == "off":
        return ["near-duplicate grouping: off"]
    conflicting = near["dropped_conflicting"]
    lines = [f"near-duplicates (32x32 correlation >= {near['threshold']}): {near['sets']} sets covering "
             f"{near['images']} images, each set kept in one part; {len(conflicting)} set(s) with both classes "
             f"dropped ({near['dropped_images']} images)"]
    return lines + [f"note: {note}" for note in record.get("near_duplicate_notes", [])]
