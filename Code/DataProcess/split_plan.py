"""Planning of a group-aware, stratified, nested, seeded split (which image goes where) (docs/design.md, "Data").

Rule (per class c, independently; a group is a case, all of whose frames stay together):
1. test: the class's groups in a seeded order ``default_rng([seed, 1, c])``; the test share is the reachable
   whole-group image count closest to ``round(test_ratio · n_c)`` (ties → the smaller), filled by
   :func:`fill_exactly`; the other groups are train.
1b. val (``val_ratio`` > 0): carved out of train *before* any budget is drawn, the same way with
   ``default_rng([seed, 3, c])`` and ``round(val_ratio · n_c)`` images (a share of the whole class, like the
   test share); val is where checkpoints and thresholds are chosen, never test. A ``val_ratio`` > 0 that gives a
   class no val image is refused (:func:`refuse_empty_val` names the smallest ratio that works).
2. labeled: the train groups in a seeded order ``default_rng([draw_seed, 2, c])`` (``draw_seed``, default
   ``seed``: another draw redraws only the labeled/unlabeled partition, test and val stay fixed); for the budgets N₁ < N₂ < … the
   labeled set of Nₖ is that of Nₖ₋₁ plus groups filled to exactly Nₖ/2 − Nₖ₋₁/2 more images (nested budgets);
   should whole groups make that impossible, the sets are chosen largest first instead, each an exact fill inside
   the next larger one (:func:`nested_fill`). Error if neither gives exactly Nₖ/2 images for every k.
   ``all`` (``--labels all``) adds the budget N = number of train images, labeling every one of them.
:func:`fill_exactly` walks groups in order and takes a group when the rest of the target can still be met exactly
by later groups (a subset-sum look-ahead), else skips it: exact whenever any choice of whole groups is.
Output file names are the source names with whitespace and other unsafe characters replaced by ``_``
(``benign (1).png`` → ``benign_1.png``; a clash gets ``_2``, ``_3``…); ``split.json`` maps them back.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from Code.data.lists import CLASS_NAMES
from Code.DataProcess.raw_readers import RawItem
from Code.errors import UserError

UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass
class SplitPlan:
    """Indices into the item list: test, val, train, and the labeled subset of train for each budget N."""
    test: List[int]
    train: List[int]
    labeled: Dict[int, List[int]]
    val: List[int] = field(default_factory=list)


def fill_exactly(sizes: Sequence[int], target: int) -> Optional[List[int]]:
    """Positions of a subset of `sizes` summing to exactly `target`, preferring earlier positions; None if none.

    reach[i] is a bitset of the sums reachable with sizes[i:]; position i is taken iff the remainder after it is
    still in reach[i + 1]. O(len(sizes) · target / 64) with Python integers as bitsets."""
    if target < 0:
        return None
    limit = (1 << (target + 1)) - 1
    reach = [0] * (len(sizes) + 1)
    reach[-1] = 1
    for i in range(len(sizes) - 1, -1, -1):
        reach[i] = (reach[i + 1] | (reach[i + 1] << sizes[i])) & limit
    if not (reach[0] >> target) & 1:
        return None
    chosen, remaining = [], target
    for i, size in enumerate(sizes):
        if remaining == 0:
            break
        if size <= remaining and (reach[i + 1] >> (remaining - size)) & 1:
            chosen.append(i)
            remaining -= size
    return chosen


def nested_fill(sizes: Sequence[int], targets: Sequence[int]) -> Optional[List[set]]:
    """Nested position sets P_1 ⊆ P_2 ⊆ … with Σ sizes[P_k] = targets[k] (targets ascending), or None.

    Forward: P_1 by :func:`fill_exactly`, then each P_k = P_(k−1) + an exact fill of the increment from the
    positions not yet taken, in order. If that gets stuck, backward: P_K first, then each P_k an exact fill
    inside P_(k+1), in order."""
    forward, taken = [], set()
    for target in targets:
        free = [p for p in range(len(sizes)) if p not in taken]
        picked = fill_exactly([sizes[p] for p in free], target - sum(sizes[p] for p in taken))
        if picked is None:
            break
        taken = taken | {free[k] for k in picked}
        forward.append(taken)
    if len(forward) == len(targets):
        return forward
    backward, pool = [], list(range(len(sizes)))
    for target in reversed(targets):
        picked = fill_exactly([sizes[p] for p in pool], target)
        if picked is None:
            return None
        pool = [pool[k] for k in picked]
        backward.append(set(pool))
    return backward[::-1]


def closest_reachable(sizes: Sequence[int], target: int) -> int:
    """The subset sum of `sizes` closest to `target` (ties → the smaller)."""
    reach = 1
    for size in sizes:
        reach |= reach << size
    sums = [s for s in range(reach.bit_length()) if (reach >> s) & 1]
    return min(sums, key=lambda s: (abs(s - target), s))


def _class_groups(items: Sequence[RawItem], indices: Sequence[int]) -> Dict[str, List[int]]:
    groups: Dict[str, List[int]] = {}
    for i in indices:
        groups.setdefault(items[i].group, []).append(i)
    return groups


def _seeded_order(keys: Sequence[str], seed: int, stream: int, label: int) -> List[str]:
    keys = sorted(keys)
    order = np.random.default_rng([seed, stream, label]).permutation(len(keys))
    return [keys[int(k)] for k in order]


def _check_groups(items: Sequence[RawItem]) -> None:
    labels_of: Dict[str, set] = {}
    for item in items:
        labels_of.setdefault(item.group, set()).add(item.label)
    mixed = sorted(g for g, labels in labels_of.items() if len(labels) > 1)
    if mixed:
        raise UserError(f"group {mixed[0]!r} has both benign and malignant images; the per-class split needs one "
                        f"class per group (fix the group column or --group-regex)")


def check_budgets(labels: Sequence[int]) -> List[int]:
    """Sorted distinct budgets; UserError for an odd or non-positive N."""
    if not labels:
        raise UserError("--labels needs at least one budget N")
    for n in labels:
        if n <= 0 or n % 2:
            raise UserError(f"--labels {n}: N must be a positive even number (N/2 labeled images per class)")
    return sorted(set(int(n) for n in labels))


def _carve(groups: Dict[str, List[int]], keys: Sequence[str], target: int, seed: int, stream: int,
           label: int) -> Tuple[List[str], List[str]]:
    """(chosen group keys, the other keys): whole groups, seeded order, image count closest to ``target``."""
    order = _seeded_order(list(keys), seed, stream, label)
    sizes = [len(groups[g]) for g in order]
    chosen = set(fill_exactly(sizes, closest_reachable(sizes, target)))
    return ([g for p, g in enumerate(order) if p in chosen], [g for p, g in enumerate(order) if p not in chosen])


def _split_class(items, indices, label, budgets, seed, test_ratio, val_ratio=0.0, draw_seed=None) -> tuple:
    """(test indices, val indices, train indices, {N: labeled indices}) of one class."""
    groups = _class_groups(items, indices)
    test_groups, rest = _carve(groups, list(groups), int(round(test_ratio * len(indices))), seed, 1, label)
    test = [i for g in test_groups for i in groups[g]]
    val_groups, train_groups = ([], rest) if val_ratio <= 0 else _carve(
        groups, rest, int(round(val_ratio * len(indices))), seed, 3, label)
    val = [i for g in val_groups for i in groups[g]]
    train = [i for g in train_groups for i in groups[g]]
    name = CLASS_NAMES[label]
    for n in budgets:
        if n // 2 > len(train):
            raise UserError(f"--labels {n} needs {n // 2} labeled {name} images but the {name} train part has only "
                            f"{len(train)}, so N can be at most {2 * len(train)}")
    ordered = _seeded_order(train_groups, seed if draw_seed is None else draw_seed, 2, label)
    chosen = nested_fill([len(groups[g]) for g in ordered], [n // 2 for n in budgets])
    if chosen is None:
        raise UserError(f"--labels {' '.join(map(str, budgets))}: no nested choice of whole {name} cases gives "
                        f"exactly N/2 labeled images for every N; choose other budgets")
    labeled = {n: [i for p, g in enumerate(ordered) if p in positions for i in groups[g]]
               for n, positions in zip(budgets, chosen)}
    return test, val, train, labeled


def plan_split(items: Sequence[RawItem], labels: Sequence[int], seed: int = 0, test_ratio: float = 0.3,
               val_ratio: float = 0.0, draw_seed: Optional[int] = None) -> SplitPlan:
    """Decide which item goes where (no files are touched). See the module docstring for the rule; test and val
    depend on ``seed`` only, the labeled sets on ``draw_seed`` (None: ``seed``)."""
    if not 0.0 < test_ratio < 1.0:
        raise UserError(f"--test-ratio {test_ratio} must be between 0 and 1 (exclusive)")
    if not 0.0 <= val_ratio < 1.0 or test_ratio + val_ratio >= 1.0:
        raise UserError(f"--val-ratio {val_ratio} must be at least 0 and leave a train part "
                        f"(--test-ratio + --val-ratio < 1)")
    take_all = "all" in labels  # --labels all: every labeled train image, whatever the class balance
    labels = [n for n in labels if n != "all"]
    budgets = check_budgets(labels) if labels or not take_all else []
    _check_groups(items)
    plan = SplitPlan([], [], {n: [] for n in budgets})
    no_val = []
    for label in (0, 1):
        indices = [i for i, item in enumerate(items) if item.label == label]
        test, val, train, labeled = _split_class(items, indices, label, budgets, seed, test_ratio, val_ratio,
                                                 draw_seed)
        if val_ratio > 0 and not val:
            no_val.append((label, len(indices), train))
        plan.test += test
        plan.val += val
        plan.train += train
        for n in budgets:
            plan.labeled[n] += labeled[n]
    if no_val:
        refuse_empty_val(items, val_ratio, no_val)
    if take_all:
        plan.labeled[len(plan.train)] = list(plan.train)
    return plan


def refuse_empty_val(items: Sequence[RawItem], val_ratio: float, no_val: Sequence[Tuple[int, int, List[int]]]):
    """UserError for a ``val_ratio`` > 0 that gives a class no val image (there would be no val/ part for that
    class, and with none at all no best.pt): the count and the smallest ratio, in hundredths, that gives each such
    class at least one (whole cases: the closest reachable count to round(ratio · n_c) must be > 0).
    ``no_val``: (class, its image count n_c, its train indices, from which val is carved)."""
    needed, counts = 0, []
    for label, n_class, train in no_val:
        sizes = [len(g) for g in _class_groups(items, train).values()]
        target = next((t for t in range(1, len(train) + 1) if closest_reachable(sizes, t) > 0), None)
        ratios = [k for k in range(1, 100) if target and int(round(k / 100 * n_class)) >= target]
        needed = max(needed, ratios[0] if ratios else 100)
        counts.append(f"0 of {n_class} {CLASS_NAMES[label]} images")
    hint = f"the smallest ratio that gives each class one is {needed / 100:g}" if needed < 100 else \
        "no ratio gives each class one (too few train images)"
    raise UserError(f"--val-ratio {val_ratio} gives no val image ({' and '.join(counts)}); {hint} (or "
                    f"--val-ratio 0: no val/ part, checkpoints not chosen on val)")


def assign_names(items: Sequence[RawItem]) -> List[str]:
    """Space-free, unique (case-insensitively) output stems, one per item, in item order."""
    used, names = set(), []
    for item in items:
        stem = UNSAFE.sub("_", item.image.stem).strip("_") or "image"
        candidate, k = stem, 1
        while candidate.lower() in used:
            k += 1
            candidate = f"{stem}_{k}"
        used.add(candidate.lower())
        names.append(candidate)
    return names
