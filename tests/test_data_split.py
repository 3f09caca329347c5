"""data_split.py / splitting library: layout, counts, stratification, nesting, groups, determinism, errors."""
from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from Code.data import read_labeled_list, read_unlabeled_list
from Code.DataProcess import data_split
from Code.DataProcess.split_plan import closest_reachable, fill_exactly, nested_fill
from Code.DataProcess.splitting import split_dataset
from Code.errors import UserError

SCRIPT = "Code/DataProcess/data_split.py"


def _tree_bytes(root: Path) -> dict:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _groups(split: Path, names) -> set:
    files = json.loads((split / "split.json").read_text())["files"]
    return {files[name]["group"] for name in names}


def test_layout_and_list_files(phantom_split, split_labels):
    test = read_labeled_list(phantom_split / "test" / "labeled.txt")
    for image, mask, _ in test:
        assert (phantom_split / "test" / "image" / image).is_file()
        assert (phantom_split / "test" / "mask" / mask).is_file()
    for n in split_labels:
        part = phantom_split / "train" / str(n)
        labeled = read_labeled_list(part / "labeled" / "labeled.txt")
        assert len(labeled) == n and sorted(l for *_, l in labeled) == [0] * (n // 2) + [1] * (n // 2)
        for image in read_unlabeled_list(part / "unlabeled" / "unlabeled.txt"):
            assert (part / "unlabeled" / "image" / image).is_file()
        lines = (part / "labeled" / "labeled.txt").read_text().splitlines()
        assert all(len(line.split(" ")) == 3 for line in lines)  # single spaces
    mask = cv2.imread(str(phantom_split / "test" / "mask" / test[0][1]), cv2.IMREAD_UNCHANGED)
    assert set(np.unique(mask)) <= {0, 255}


def test_counts_stratification_and_nesting(phantom_split, split_labels, tiny_phantom_args):
    record = json.loads((phantom_split / "split.json").read_text())
    counts = record["counts"]
    for cls, key in (("benign", "n_benign"), ("malignant", "n_malignant")):
        total = tiny_phantom_args[key]
        assert counts["test"][cls] + counts["val"][cls] + counts["train"][cls] == total
        assert abs(counts["test"][cls] - 0.3 * total) <= 3  # whole groups of <= 4 frames
        assert abs(counts["val"][cls] - 0.25 * total) <= 3
    test_names = {i for i, _, _ in read_labeled_list(phantom_split / "test" / "labeled.txt")}
    test_names |= {i for i, _, _ in read_labeled_list(phantom_split / "val" / "labeled.txt")}
    previous = set()
    for n in split_labels:
        part = phantom_split / "train" / str(n)
        labeled = {i for i, _, _ in read_labeled_list(part / "labeled" / "labeled.txt")}
        unlabeled = set(read_unlabeled_list(part / "unlabeled" / "unlabeled.txt"))
        assert previous <= labeled, "budgets must be nested"
        assert not labeled & unlabeled and not (labeled | unlabeled) & test_names
        assert len(labeled | unlabeled) == counts["train"]["total"]
        previous = labeled


def test_groups_never_straddle_parts(phantom_split, split_labels):
    test_groups = _groups(phantom_split, [i for i, _, _ in read_labeled_list(phantom_split / "test" / "labeled.txt")])
    val_groups = _groups(phantom_split, [i for i, _, _ in read_labeled_list(phantom_split / "val" / "labeled.txt")])
    assert val_groups and not val_groups & test_groups
    for n in split_labels:
        part = phantom_split / "train" / str(n)
        labeled = _groups(phantom_split, [i for i, _, _ in read_labeled_list(part / "labeled" / "labeled.txt")])
        unlabeled = _groups(phantom_split, read_unlabeled_list(part / "unlabeled" / "unlabeled.txt"))
        assert not labeled & unlabeled and not (test_groups | val_groups) & (labeled | unlabeled)
    assert all("-" in g and not g.endswith(".png") for g in test_groups)  # case ids like PH-0001


def test_unlabeled_truth_lists_exactly_the_unlabeled_images(phantom_split, split_labels):
    """Mutation checked: truth.txt written for the labeled part (or with the wrong classes)."""
    files = json.loads((phantom_split / "split.json").read_text())["files"]
    for n in split_labels:
        part = phantom_split / "train" / str(n) / "unlabeled"
        truth = read_labeled_list(part / "truth.txt")
        assert [image for image, _, _ in truth] == read_unlabeled_list(part / "unlabeled.txt")
        assert all(files[image]["label"] == label and (part / "mask" / mask).is_file() for image, mask, label in truth)


def test_val_ratio_zero_writes_no_val_and_is_recorded(phantom_raw, tmp_path):
    """Mutation checked: val carved from test instead of train (test changes with --val-ratio)."""
    from Code.DataProcess.splitting import split_dataset

    without = split_dataset("sztus", phantom_raw, tmp_path / "a", [4], seed=0, val_ratio=0.0)
    with_val = split_dataset("sztus", phantom_raw, tmp_path / "b", [4], seed=0, val_ratio=0.25)
    assert not (tmp_path / "a" / "val").exists() and (tmp_path / "b" / "val" / "labeled.txt").is_file()
    assert with_val["arguments"]["val_ratio"] == 0.25 and "val" in with_val["counts"]
    assert (tmp_path / "a" / "test" / "labeled.txt").read_text() == (tmp_path / "b" / "test" / "labeled.txt").read_text()
    assert without["counts"]["train"]["total"] == with_val["counts"]["train"]["total"] + with_val["counts"]["val"]["total"]


def test_val_ratio_giving_no_val_image_is_refused_with_the_smallest_that_works(phantom_raw, tmp_path, run_main,
                                                                             assert_one_line_error):
    """Issue 21: --val-ratio 0.01 silently gave no val/ (so no best.pt). Mutations checked: without the check the
    split is written without val/; a suggested ratio one hundredth too small (target 0 instead of the first
    count whose closest whole-case sum is > 0) fails the last two asserts."""
    result = run_main(data_split.main, "--dataset", "sztus", "--root", phantom_raw, "--out", tmp_path / "o",
                      "--labels", 4, "--val-ratio", 0.01)
    assert_one_line_error(result, "--val-ratio 0.01 gives no val image (0 of 24 benign images and 0 of 24 "
                                  "malignant images); the smallest ratio that gives each class one is")
    assert not (tmp_path / "o").exists()
    smallest = float(result.stderr.split("gives each class one is ")[1].split()[0])
    record = split_dataset("sztus", phantom_raw, tmp_path / "a", ["all"], val_ratio=smallest)
    assert record["counts"]["val"]["benign"] > 0 and record["counts"]["val"]["malignant"] > 0
    with pytest.raises(UserError, match="gives no val image"):
        split_dataset("sztus", phantom_raw, tmp_path / "b", ["all"], val_ratio=round(smallest - 0.01, 2))


def test_cli_is_deterministic_and_force_replaces(phantom_raw, tmp_path, run_script, run_main, assert_one_line_error):
    args = ["--dataset", "sztus", "--root", phantom_raw, "--labels", 10, 4, "--val-ratio", 0.25, "--seed", 0]
    first = run_script(SCRIPT, *args, "--out", tmp_path / "a")  # the script itself, once; the rest in-process
    assert first.returncode == 0, first.stderr
    assert "train/10/labeled" in first.stdout and "malignant" in first.stdout
    assert run_main(data_split.main, *args, "--out", tmp_path / "b").returncode == 0
    assert _tree_bytes(tmp_path / "a") == _tree_bytes(tmp_path / "b")
    (tmp_path / "b" / "stale.txt").write_text("old")
    assert_one_line_error(run_main(data_split.main, *args, "--out", tmp_path / "b"), "not empty", "--force")
    assert run_main(data_split.main, *args, "--out", tmp_path / "b", "--force").returncode == 0
    assert _tree_bytes(tmp_path / "a") == _tree_bytes(tmp_path / "b")
    other = run_main(data_split.main, *args[:-1], "6", "--out", tmp_path / "c")
    assert other.returncode == 0 and _tree_bytes(tmp_path / "a") != _tree_bytes(tmp_path / "c")


@pytest.mark.parametrize("argument, fragment", [(["--labels", "5"], "even"), (["--labels", "400"], "at most")])
def test_cli_budget_errors(phantom_raw, tmp_path, run_main, assert_one_line_error, argument, fragment):
    result = run_main(data_split.main, "--dataset", "sztus", "--root", phantom_raw, "--out", tmp_path / "o", *argument)
    assert_one_line_error(result, fragment)
    assert not (tmp_path / "o").exists()


def test_cli_missing_root(tmp_path, run_main, assert_one_line_error):
    result = run_main(data_split.main, "--dataset", "sztus", "--root", tmp_path / "nope", "--out", tmp_path / "o",
                      "--labels", 4)
    assert_one_line_error(result, "--root", "nope")


def _small_raw(phantom_raw: Path, tmp_path: Path) -> Path:
    """A copy of the tiny phantom to break on purpose."""
    raw = tmp_path / "raw"
    shutil.copytree(phantom_raw, raw)
    return raw


def _first_image(raw: Path, cls: str = "benign") -> Path:
    return sorted((raw / cls / "image").iterdir())[0]


def test_image_without_mask(phantom_raw, tmp_path):
    raw = _small_raw(phantom_raw, tmp_path)
    image = _first_image(raw)
    (raw / "benign" / "mask" / image.name).unlink()
    with pytest.raises(UserError, match=f"{image.name} has no mask"):
        split_dataset("sztus", raw, tmp_path / "o", [4])


def test_mask_of_another_size(phantom_raw, tmp_path):
    raw = _small_raw(phantom_raw, tmp_path)
    image = _first_image(raw, "malignant")
    cv2.imwrite(str(raw / "malignant" / "mask" / image.name), np.zeros((10, 12), np.uint8))
    with pytest.raises(UserError, match="is 12x10 but its image"):
        split_dataset("sztus", raw, tmp_path / "o", [4])


def test_unreadable_image(phantom_raw, tmp_path, run_main, assert_one_line_error):
    raw = _small_raw(phantom_raw, tmp_path)
    image = _first_image(raw)
    image.write_bytes(b"not a png")
    result = run_main(data_split.main, "--dataset", "sztus", "--root", raw, "--out", tmp_path / "o", "--labels", 4)
    assert_one_line_error(result, "cannot read image", image.name)


def _write_csv(path: Path, rows) -> Path:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "mask", "label", "group"])
        writer.writerows(rows)
    return path


def _csv_rows(raw: Path):
    rows = []
    for cls in ("benign", "malignant"):
        for image in sorted((raw / cls / "image").iterdir()):
            rows.append([f"{cls}/image/{image.name}", f"{cls}/mask/{image.name}", cls, image.stem.rsplit("-", 1)[0]])
    return rows


def test_csv_dataset_and_unknown_label(phantom_raw, tmp_path):
    rows = _csv_rows(phantom_raw)
    from_csv = split_dataset("csv", phantom_raw, tmp_path / "c", [4], csv_file=_write_csv(tmp_path / "l.csv", rows))
    from_dirs = split_dataset("sztus", phantom_raw, tmp_path / "s", [4])
    assert from_csv["counts"] == from_dirs["counts"]  # same groups, same seeded rule
    rows[3][2] = "suspicious"
    with pytest.raises(UserError, match="line 5: unknown label 'suspicious'"):
        split_dataset("csv", phantom_raw, tmp_path / "d", [4], csv_file=_write_csv(tmp_path / "bad.csv", rows))


def test_group_regex_override(phantom_raw, tmp_path):
    record = split_dataset("sztus", phantom_raw, tmp_path / "o", [4], group_regex=r"^(PH-\d{4}-\d)$")
    assert record["counts"]["test"]["groups"] == record["counts"]["test"]["total"]  # one group per image
    with pytest.raises(UserError, match="does not match"):
        split_dataset("sztus", phantom_raw, tmp_path / "p", [4], group_regex=r"^XY")


def test_fill_exactly_prefers_order_and_detects_impossible():
    assert fill_exactly([3, 3, 1, 2], 5) == [0, 3]  # 3 + 2; 3 + 1 would leave nothing that fits
    assert fill_exactly([4, 4, 4], 6) is None
    assert fill_exactly([2, 5, 1], 0) == []
    assert closest_reachable([4, 4, 4], 6) == 4 and closest_reachable([4, 4, 4], 7) == 8


def test_nested_fill_falls_back_to_largest_first():
    # forward: {0} (size 2) for 2, then 3 more from [3, 3, 1, 1]... needs 3 → {1}; both exact
    assert nested_fill([2, 3, 3, 1, 1], [2, 5]) == [{0}, {0, 1}]
    # forward takes {0} (size 1) for 1, then needs 3 from [2, 2] → stuck; backward: 4 = {1, 2}? no → {0, 1, ...}
    sizes = [1, 2, 2]
    chosen = nested_fill(sizes, [1, 4])
    assert chosen is None or all(sum(sizes[p] for p in s) == t for s, t in zip(chosen, [1, 4]))
    assert nested_fill([3, 3], [2]) is None


def test_budgets_impossible_with_whole_cases(phantom_raw, tmp_path):
    with pytest.raises(UserError, match="no nested choice of whole"):
        split_dataset("sztus", phantom_raw, tmp_path / "o", [4, 8])


def test_ensure_phantom_split_generates_once_and_repairs(tmp_path, monkeypatch, tiny_phantom_args):
    from Code.DataProcess import default_data
    monkeypatch.setattr(default_data, "DEFAULT_PHANTOM", dict(tiny_phantom_args, n_benign=12, n_malignant=12))
    monkeypatch.setattr(default_data, "LABEL_BUDGETS", (4,))
    monkeypatch.setattr(default_data, "VAL_RATIO", 0.25)  # 0.1 of 12 images per class gives no val image
    split = default_data.ensure_phantom_split(tmp_path / "cache")
    assert split == tmp_path / "cache" / "phantom_split" and (split / "train" / "4" / "labeled").is_dir()
    marker = split / "split.json"
    stamp = marker.stat().st_mtime_ns
    assert default_data.ensure_phantom_split(tmp_path / "cache") == split
    assert marker.stat().st_mtime_ns == stamp  # complete: nothing regenerated
    marker.unlink()  # an interrupted split has no marker
    (split / "test" / "labeled.txt").unlink()
    default_data.ensure_phantom_split(tmp_path / "cache")
    assert marker.is_file() and (split / "test" / "labeled.txt").is_file()


def test_draw_seed_redraws_only_the_labeled_partition(phantom_raw, tmp_path, run_main):
    """Two draws share test/ and val/ byte for byte and differ in the labeled lists; the same draw seed is
    byte-identical; no --draw-seed means the draw seed equals --seed.

    Mutations checked: the labeled order seeded with ``seed`` instead of ``draw_seed`` → labeled lists equal; the
    test or val carve seeded with ``draw_seed`` → test / val lists differ."""
    args = ["--dataset", "sztus", "--root", phantom_raw, "--labels", 4, 10, "--val-ratio", 0.25, "--seed", 0]
    for name, draw in (("d1", 1), ("d2", 2), ("d2_again", 2), ("d0", 0)):
        result = run_main(data_split.main, *args, "--draw-seed", draw, "--out", tmp_path / name)
        assert result.returncode == 0, result.stderr
    assert run_main(data_split.main, *args, "--out", tmp_path / "plain").returncode == 0
    d1, d2 = _tree_bytes(tmp_path / "d1"), _tree_bytes(tmp_path / "d2")
    for part in ("test/labeled.txt", "val/labeled.txt"):
        assert d1[part] == d2[part]
    assert all(d1[k] == d2[k] for k in d1 if k.startswith(("test/", "val/")))
    # (budget 4 has one choice here: the tiny phantom's train holds one 2-frame case per class)
    assert d1["train/10/labeled/labeled.txt"] != d2["train/10/labeled/labeled.txt"]
    assert _tree_bytes(tmp_path / "d2_again") == d2
    assert _tree_bytes(tmp_path / "plain") == _tree_bytes(tmp_path / "d0")
    assert [json.loads(d["split.json"])["draw_seed"] for d in (d1, d2)] == [1, 2]
