"""Library entry point of the data split: read a raw data set, plan the split, validate and write the files.

    summary = split_dataset("sztus", "raw/", "split/", labels=[42, 104])

Output (docs/design.md, "Data"): ``test/{image,mask}/``, ``test/labeled.txt``, ``val/`` likewise (when ``val_ratio`` > 0), ``train/<N>/labeled/{image,mask}/`` with
``labeled.txt``, ``train/<N>/unlabeled/image/`` with ``unlabeled.txt`` (empty when N takes all of train) — plus that part's truth,
``mask/`` and ``truth.txt``, read only by the pseudo-label diagnostics — and
``split.json`` (written last, so its presence marks a complete split): seed, arguments (not --out/--force), counts per class and part, and for
every output name its source image, mask files, class and group. Images are copied byte for byte; masks are
merged (OR), binarised and written as 0/255 PNG. Same inputs and seed → byte-identical tree.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from Code.data.image_io import load_gray, load_mask
from Code.data.lists import write_labeled_list, write_unlabeled_list
from Code.DataProcess.duplicates import merge_identical_content, merge_repeated_rows
from Code.DataProcess.near_duplicates import (DEFAULT_THRESHOLD, drop_pool_near_held_out, group_near_duplicates,
                                              near_duplicate_summary)
from Code.DataProcess.raw_readers import RawItem, read_raw
from Code.DataProcess.split_plan import CLASS_NAMES, SplitPlan, assign_names, plan_split
from Code.DataProcess.unlabeled_pool import UnlabeledPool, check_decodes, read_csv_unlabeled, read_extra
from Code.errors import UserError
from Code.outputs import prepare_output_folder

TRUTH_LIST = "truth.txt"  # the unlabeled images' truth, for pseudo-label diagnostics only


def merged_mask_png(item: RawItem) -> bytes:
    """Validate `item` (image readable, every mask readable and of the image's size) and return its merged
    binary mask encoded as a 0/255 PNG."""
    image = load_gray(item.image)
    merged = np.zeros(image.shape[:2], np.uint8)
    for mask_path in item.masks:
        mask = load_mask(mask_path)  # binarised at the file's own bit depth (8 or 16)
        if mask.shape[:2] != image.shape[:2]:
            raise UserError(f"mask {mask_path} is {mask.shape[1]}x{mask.shape[0]} but its image {item.image} is "
                            f"{image.shape[1]}x{image.shape[0]}")
        merged |= mask
    ok, encoded = cv2.imencode(".png", merged * np.uint8(255))
    if not ok:
        raise UserError(f"cannot encode the mask of {item.image}")
    return encoded.tobytes()


def read_checked(dataset: str, root, group_regex, include_normal: bool, csv_file
                 ) -> Tuple[List[RawItem], List[bytes], List[str]]:
    """(items, their merged masks as 0/255 PNG, notes): every image and mask decoded; a CSV's repeated rows and
    byte-identical images listed once or refused (duplicates.py). The folder layouts (sztus, busi) are read as
    they are, so that their splits stay what they were."""
    items, notes = merge_repeated_rows(read_raw(dataset, root, group_regex, include_normal, csv_file))
    masks = [merged_mask_png(item) for item in items]
    if dataset == "csv":
        items, masks, more = merge_identical_content(items, masks)
        notes += more
    return items, masks, notes


def empty_mask_counts(items: Sequence[RawItem], masks: Sequence[bytes]) -> Dict[str, Dict[str, int]]:
    """Per class: how many of its images have an empty (all-background) merged mask, and how many it has."""
    counts = {name: {"empty": 0, "total": 0} for name in CLASS_NAMES}
    for item, png in zip(items, masks):
        entry = counts[CLASS_NAMES[item.label]]
        entry["total"] += 1
        entry["empty"] += int(not cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_GRAYSCALE).any())
    return counts


def collect_pool(items: Sequence[RawItem], plan: SplitPlan, csv_root, csv_file, extra: Sequence[str],
                 near_dup_threshold: Optional[float] = None) -> UnlabeledPool:
    """The unlabeled-only images (CSV rows without mask and label when ``csv_root``, then each ``extra``), less
    the near-duplicates of test / val images (near_duplicates.py; noted)."""
    candidates = read_csv_unlabeled(csv_root, csv_file) if csv_root is not None else []
    for source in extra:
        candidates += read_extra(source)
    check_decodes(candidates)
    held_out = {i: "test" for i in plan.test}
    held_out.update({i: "val" for i in getattr(plan, "val", [])})
    candidates, near_notes = drop_pool_near_held_out(
        candidates, [(items[i], part) for i, part in sorted(held_out.items())], near_dup_threshold)

    def names_for(pool):
        return [n + p.image.suffix.lower() for n, p in zip(assign_names([*items, *pool])[len(items):], pool)]
    pool = UnlabeledPool.collect(items, held_out, candidates, names_for)
    pool.notes = near_notes + pool.notes
    return pool


def split_inputs(dataset_root, csv_file, extra: Sequence[str], items: Sequence[RawItem], pool: UnlabeledPool):
    """Everything the split reads, as ``(path, how it was named)``: ``--out`` may never contain or lie inside one."""
    inputs = [(dataset_root, f"--root {dataset_root}"), (csv_file, f"--csv {csv_file}")]
    inputs += [(source, f"--extra-unlabeled {source}") for source in extra]
    folders = {p.parent for item in items for p in (item.image, *item.masks)} | {i.image.parent for i in pool.images}
    return inputs + [(folder, f"the source folder {folder}") for folder in sorted(folders)]


class _Writer:
    """Copies items into part folders under their output names."""

    def __init__(self, items: Sequence[RawItem], names: Sequence[str], masks: Sequence[bytes]):
        self.items, self.masks = items, masks
        self.image_names = [n + items[i].image.suffix.lower() for i, n in enumerate(names)]
        self.mask_names = [n + ".png" for n in names]

    def _ordered(self, indices: Sequence[int]) -> List[int]:
        return sorted(indices, key=lambda i: (self.items[i].label, self.image_names[i]))

    def labeled_part(self, folder: Path, indices: Sequence[int]) -> None:
        (folder / "image").mkdir(parents=True)
        (folder / "mask").mkdir(parents=True)
        ordered = self._ordered(indices)
        for i in ordered:
            shutil.copyfile(self.items[i].image, folder / "image" / self.image_names[i])
            (folder / "mask" / self.mask_names[i]).write_bytes(self.masks[i])
        write_labeled_list(folder / "labeled.txt",
                           [(self.image_names[i], self.mask_names[i], self.items[i].label) for i in ordered])

    def unlabeled_part(self, folder: Path, indices: Sequence[int]) -> None:
        """Images and ``unlabeled.txt``; plus, for pseudo-label diagnostics only, their truth: ``mask/`` and
        ``truth.txt`` (labeled.txt format). The trainers never feed it to a loss."""
        (folder / "image").mkdir(parents=True)
        (folder / "mask").mkdir(parents=True)
        ordered = self._ordered(indices)
        for i in ordered:
            shutil.copyfile(self.items[i].image, folder / "image" / self.image_names[i])
            (folder / "mask" / self.mask_names[i]).write_bytes(self.masks[i])
        write_unlabeled_list(folder / "unlabeled.txt", [self.image_names[i] for i in ordered])
        write_labeled_list(folder / TRUTH_LIST,
                           [(self.image_names[i], self.mask_names[i], self.items[i].label) for i in ordered])


def _counts(items: Sequence[RawItem], indices: Sequence[int]) -> Dict[str, int]:
    counts = {name: sum(1 for i in indices if items[i].label == label) for label, name in enumerate(CLASS_NAMES)}
    counts["total"] = len(indices)
    counts["groups"] = len({items[i].group for i in indices})
    normal = sum(1 for i in indices if items[i].source_class == "normal")
    if normal:
        counts["normal"] = normal  # BUSI --include-normal: already counted in class 0 ("benign")
    return counts


def _parts(plan: SplitPlan) -> Dict[str, List[int]]:
    parts = {"test": plan.test, "train": plan.train}
    if plan.val:
        parts["val"] = plan.val
    for n, labeled in plan.labeled.items():
        chosen = set(labeled)
        parts[f"train/{n}/labeled"] = labeled
        parts[f"train/{n}/unlabeled"] = [i for i in plan.train if i not in chosen]
    return parts


def split_dataset(dataset: str, root, out, labels: Sequence[int], seed: int = 0, test_ratio: float = 0.3,
                  group_regex: Optional[str] = None, include_normal: bool = False, csv_file=None,
                  force: bool = False, extra_unlabeled: Sequence[str] = (), val_ratio: float = 0.0,
                  draw_seed: Optional[int] = None, near_dup_threshold: Optional[float] = DEFAULT_THRESHOLD) -> dict:
    """Split a raw data set (sztus / busi / csv) into `out`; returns the split.json content. ``labels`` may hold
    ``"all"``; unlabeled-only images (CSV rows without mask and label, ``extra_unlabeled``) join every unlabeled pool
    (see unlabeled_pool.py). Near-duplicates share a group; sets with both classes are dropped (near_duplicates.py;
    ``near_dup_threshold`` None: off). ``draw_seed`` (None: ``seed``) draws the labeled sets; test and val depend on
    ``seed`` only. Everything is validated before `out` is touched; UserError on any bad input."""
    draw_seed = seed if draw_seed is None else draw_seed
    items, masks, notes = read_checked(dataset, root, group_regex, include_normal, csv_file)
    near = group_near_duplicates(items, near_dup_threshold, root)
    mask_of = {item.image: mask for item, mask in zip(items, masks)}  # image paths are unique after read_checked
    items = near.items
    masks = [mask_of[item.image] for item in items]
    plan = plan_split(items, labels, seed, test_ratio, val_ratio, draw_seed)
    names = assign_names(items)
    pool = collect_pool(items, plan, root if dataset == "csv" else None, csv_file, extra_unlabeled,
                        near_dup_threshold)
    inputs = split_inputs(root, csv_file, extra_unlabeled, items, pool)
    out = prepare_output_folder(out, "data_split.py", force, inputs)  # README "Outputs and --force"
    writer = _Writer(items, names, masks)
    writer.labeled_part(out / "test", plan.test)
    if plan.val:
        writer.labeled_part(out / "val", plan.val)
    for n, labeled in plan.labeled.items():
        chosen = set(labeled)
        writer.labeled_part(out / "train" / str(n) / "labeled", labeled)
        writer.unlabeled_part(out / "train" / str(n) / "unlabeled", [i for i in plan.train if i not in chosen])
    pool.write(out, sorted(plan.labeled))
    root_path = Path(root)
    part_of = {i: "test" for i in plan.test}
    part_of.update({i: "val" for i in plan.val})
    part_of.update({i: "train" for i in plan.train})
    record = {
        "format": "hermes-split/1",
        "seed": seed,
        "draw_seed": draw_seed,
        "near_duplicates": near.record,
        "near_duplicate_notes": near.notes,
        "arguments": {"dataset": dataset, "root": str(root), "labels": sorted(plan.labeled), "seed": seed,
                      "test_ratio": test_ratio, "val_ratio": val_ratio, "group_regex": group_regex, "include_normal": include_normal,
                      "csv": None if csv_file is None else str(csv_file)},
        "classes": {str(label): name for label, name in enumerate(CLASS_NAMES)},
        "empty_masks": empty_mask_counts(items, masks),
        "counts": {part: _counts(items, idx) for part, idx in _parts(plan).items()},
        "files": {writer.image_names[i]: {
            "source": items[i].image.relative_to(root_path).as_posix(),
            "masks": [m.relative_to(root_path).as_posix() for m in items[i].masks],
            "mask": writer.mask_names[i], "label": items[i].label, "class": items[i].source_class,
            "group": items[i].group, "part": part_of[i]} for i in sorted(range(len(items)),
                                                                       key=lambda k: writer.image_names[k])},
    }
    record["arguments"]["extra_unlabeled"] = [str(e) for e in extra_unlabeled]
    record["arguments"].update(draw_seed=draw_seed, near_dup_threshold=near.record["threshold"])
    if notes:
        record["notes"] = notes  # repeated rows / identical images listed once (duplicates.py)
    pool.annotate(record)
    (out / "split.json").write_text(json.dumps(record, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    return record


def format_summary(record: dict) -> str:
    """The counts of a split.json as a text table (one row per part)."""
    header = f"{'part':<24}{'benign':>8}{'malignant':>11}{'total':>8}{'groups':>8}"
    rows = [header, "-" * len(header)]
    for part, counts in record["counts"].items():
        rows.append(f"{part:<24}{counts['benign']:>8}{counts['malignant']:>11}{counts['total']:>8}"
                    f"{counts['groups']:>8}" + (f"   ({counts['normal']} normal in class 0)" if "normal" in counts
                                                 else ""))
    if "empty_masks" in record:
        shares = [f"{name} {c['empty']} of {c['total']} ({100.0 * c['empty'] / max(1, c['total']):.1f} %)"
                  for name, c in record["empty_masks"].items()]
        rows.append("empty masks (no lesion pixel): " + ", ".join(shares))
    if record.get("unlabeled_sources"):
        rows.append("unlabeled-only images in every unlabeled pool: " + ", ".join(
            f"{count} from {origin}" for origin, count in record["unlabeled_sources"].items()))
    rows.extend(near_duplicate_summary(record))
    rows.extend(f"note: {note}" for note in [*record.get("notes", []), *record.get("unlabeled_notes", [])])
    return "\n".join(rows)
