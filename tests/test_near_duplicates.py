"""Near-duplicate grouping of data_split (near_duplicates.py): a constructed image and its slightly noised copy.

Tiny SZ-TUS layout: 12 single-frame cases per class (random 24×24 images, so no two distinct cases correlate),
plus copies made with a little Gaussian noise (r ≈ 0.999, not byte-identical). Which part a file went to is read
from the part lists, and the copy is traced by its own file name (``PAIRA-1`` / ``PAIRB-1``), not from the groups the
code writes into split.json.
"""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from Code.data import read_labeled_list, read_unlabeled_list
from Code.DataProcess import data_split
from Code.DataProcess.near_duplicates import best_matches, signatures, similar_pairs
from Code.DataProcess.splitting import split_dataset
from Code.errors import UserError

SIZE = 24


def _noised(image: np.ndarray, seed: int) -> np.ndarray:
    noise = np.random.default_rng(seed).normal(0, 4, image.shape)
    return np.clip(image + noise, 0, 255).astype(np.uint8)


def _write(root: Path, cls: str, stem: str, image: np.ndarray) -> None:
    for sub in ("image", "mask"):
        (root / cls / sub).mkdir(parents=True, exist_ok=True)
    mask = np.zeros_like(image)
    mask[4:12, 5:15] = 255
    cv2.imwrite(str(root / cls / "image" / f"{stem}.png"), image)
    cv2.imwrite(str(root / cls / "mask" / f"{stem}.png"), mask)


def make_raw(root: Path, copy_class: str = "benign") -> Path:
    """12 benign + 12 malignant cases ``<C>-00k-1``; ``PAIRA-1`` (benign) and its noised copy ``PAIRB-1`` (class
    ``copy_class``) are two separate cases by their names."""
    rng = np.random.default_rng(0)
    for cls in ("benign", "malignant"):
        for k in range(12 - (cls == "benign")):
            _write(root, cls, f"{cls[0].upper()}{k:03d}-1", rng.integers(0, 256, (SIZE, SIZE), dtype=np.uint8))
    pair = rng.integers(0, 256, (SIZE, SIZE), dtype=np.uint8)
    _write(root, "benign", "PAIRA-1", pair)
    _write(root, copy_class, "PAIRB-1", _noised(pair, 1))
    return root


def part_of(split: Path, stem: str) -> str:
    """Which of test / val / train (labeled or unlabeled of the budget 4) lists the file ``<stem>.png``."""
    found = []
    for part in ("test", "val", "train/4/labeled"):
        if (split / part / "labeled.txt").is_file():
            found += [part for image, _, _ in read_labeled_list(split / part / "labeled.txt") if image == f"{stem}.png"]
    found += ["train/4/unlabeled" for image in read_unlabeled_list(split / "train/4/unlabeled/unlabeled.txt")
              if image == f"{stem}.png"]
    assert len(found) <= 1, found
    return found[0] if found else "absent"


def _side(part: str) -> str:
    return part.split("/")[0]  # labeled and unlabeled are both train


def test_pair_search_is_chunked_and_exact():
    """The chunked product finds the same pairs as a direct correlation matrix, whatever the chunk size."""
    rng = np.random.default_rng(3)
    base = rng.normal(size=(7, 64)).astype(np.float32)
    sig = np.concatenate([base, base[[1, 4]] + rng.normal(0, 0.05, (2, 64)).astype(np.float32)])
    sig = (sig - sig.mean(1, keepdims=True)) / (sig.std(1, keepdims=True) * 8)
    expected = sorted((i, j) for i in range(9) for j in range(i + 1, 9) if np.corrcoef(sig[i], sig[j])[0, 1] >= 0.98)
    assert expected == [(1, 7), (4, 8)]
    for chunk in (1, 2, 4, 100):
        assert sorted(similar_pairs(sig, 0.98, chunk)) == expected
    assert best_matches(sig[7:], sig[:7], 0.98, chunk=1) == [1, 4]
    assert best_matches(sig[:2], sig[2:7], 0.98) == [-1, -1]


def test_signature_is_pearson_correlation(tmp_path):
    rng = np.random.default_rng(4)
    a = rng.integers(0, 256, (64, 64), dtype=np.uint8)
    b = np.clip(a.astype(int) // 2 + rng.integers(0, 90, a.shape), 0, 255).astype(np.uint8)
    for name, image in (("a", a), ("b", b), ("flat", np.full((64, 64), 9, np.uint8))):
        cv2.imwrite(str(tmp_path / f"{name}.png"), image)
    sig = signatures([tmp_path / "a.png", tmp_path / "b.png", tmp_path / "flat.png"])
    small = [cv2.resize(x, (32, 32), interpolation=cv2.INTER_AREA).astype(float).ravel() for x in (a, b)]
    assert sig[0] @ sig[1] == pytest.approx(np.corrcoef(*small)[0, 1], abs=1e-5)
    assert sig[0] @ sig[0] == pytest.approx(1.0, abs=1e-5) and not sig[2].any()  # a flat image pairs with nothing


def test_near_duplicate_pair_never_straddles_parts(tmp_path):
    """With grouping on, the pair lands in one part (test, val, labeled or unlabeled) for every seed; with it off,
    seed 0 puts the copies in test and train and seed 2 on both sides of labeled/unlabeled (so the grouping is what
    keeps them together).

    Mutations checked: the merged group id not applied (``new_group`` ignored) → fails on the straddling seed; the
    threshold compared the wrong way round (``<``) → fails (no pair found, every random pair linked)."""
    raw = make_raw(tmp_path / "raw")
    off = split_dataset("sztus", raw, tmp_path / "off", [4], seed=0, val_ratio=0.0, near_dup_threshold=None)
    assert {_side(part_of(tmp_path / "off", "PAIRA-1")), _side(part_of(tmp_path / "off", "PAIRB-1"))} == {"test",
                                                                                                          "train"}
    assert off["near_duplicates"] == {"threshold": "off"}
    split_dataset("sztus", raw, tmp_path / "off2", [4], seed=2, val_ratio=0.0, near_dup_threshold=None)
    assert {part_of(tmp_path / "off2", "PAIRA-1"), part_of(tmp_path / "off2", "PAIRB-1")} == {"train/4/labeled",
                                                                                              "train/4/unlabeled"}
    for seed, val_ratio in ((0, 0.0), (2, 0.0), (0, 0.2), (1, 0.2), (3, 0.2)):
        out = tmp_path / f"on{seed}_{val_ratio}"
        record = split_dataset("sztus", raw, out, [4], seed=seed, val_ratio=val_ratio)
        assert part_of(out, "PAIRA-1") == part_of(out, "PAIRB-1") != "absent"
        near = record["near_duplicates"]
        assert near["sets"] == 1 and near["images"] == 2 and near["sets_joining_groups"] == 1
        assert near["members"] == [["benign/image/PAIRA-1.png", "benign/image/PAIRB-1.png"]]
        assert near["dropped_conflicting"] == []


def test_copies_with_both_classes_are_dropped_and_listed(tmp_path, run_main):
    """Mutation checked: conflicting sets kept (``dropped`` not applied) → the copies appear in the lists."""
    raw = make_raw(tmp_path / "raw", copy_class="malignant")
    result = run_main(data_split.main, "--dataset", "sztus", "--root", raw, "--out", tmp_path / "o", "--labels", 4)
    assert result.returncode == 0, result.stderr
    assert "1 set(s) with both classes dropped (2 images)" in result.stdout
    assert "benign/image/PAIRA-1.png, malignant/image/PAIRB-1.png" in result.stdout
    record = json.loads((tmp_path / "o" / "split.json").read_text())
    assert record["near_duplicates"]["dropped_conflicting"] == [["benign/image/PAIRA-1.png",
                                                                  "malignant/image/PAIRB-1.png"]]
    assert part_of(tmp_path / "o", "PAIRA-1") == part_of(tmp_path / "o", "PAIRB-1") == "absent"
    assert "PAIRA-1.png" not in record["files"] and record["counts"]["train"]["total"] + record["counts"]["test"][
        "total"] + record["counts"]["val"]["total"] == 23
    kept = run_main(data_split.main, "--dataset", "sztus", "--root", raw, "--out", tmp_path / "k", "--labels", 4,
                    "--near-dup-threshold", "off")
    assert kept.returncode == 0 and "near-duplicate grouping: off" in kept.stdout
    assert "PAIRA-1.png" in json.loads((tmp_path / "k" / "split.json").read_text())["files"]


def test_unlabeled_copy_of_a_held_out_image_is_left_out(tmp_path):
    """An --extra-unlabeled noised copy of a test image is left out with a note; one of a train image stays.

    Mutation checked: the pool filter skipped (candidates passed through) → the test copy joins the pool."""
    raw = make_raw(tmp_path / "raw")
    split_dataset("sztus", raw, tmp_path / "probe", [4], seed=0, val_ratio=0.0, near_dup_threshold=None)
    test_stem = Path(read_labeled_list(tmp_path / "probe" / "test" / "labeled.txt")[0][0]).stem
    train_stem = Path(read_unlabeled_list(tmp_path / "probe" / "train/4/unlabeled/unlabeled.txt")[0]).stem
    extra = tmp_path / "extra"
    extra.mkdir()
    for stem, tag in ((test_stem, "of_test"), (train_stem, "of_train")):
        cls = "benign" if (raw / "benign" / "image" / f"{stem}.png").is_file() else "malignant"
        cv2.imwrite(str(extra / f"copy_{tag}.png"), _noised(cv2.imread(str(raw / cls / "image" / f"{stem}.png"), 0), 2))
    record = split_dataset("sztus", raw, tmp_path / "o", [4], seed=0, val_ratio=0.0, extra_unlabeled=[str(extra)],
                           near_dup_threshold=0.98)
    pool = read_unlabeled_list(tmp_path / "o" / "train/4/unlabeled/unlabeled.txt")
    assert "copy_of_train.png" in pool and "copy_of_test.png" not in pool
    assert any("copy_of_test.png left out: a near-duplicate of" in note and "test part" in note
               for note in record["unlabeled_notes"])


@pytest.mark.parametrize("value, fragment", [("1.5", "in (0, 1]"), ("high", "not a number or 'off'")])
def test_bad_threshold_is_a_one_line_error(tmp_path, run_main, assert_one_line_error, value, fragment):
    result = run_main(data_split.main, "--dataset", "sztus", "--root", tmp_path, "--out", tmp_path / "o",
                      "--labels", 4, "--near-dup-threshold", value)
    assert_one_line_error(result, "--near-dup-threshold", fragment)


def test_a_case_with_both_classes_is_still_refused(tmp_path):
    """Frames of one case (``MIX-1`` benign, its copy ``MIX-2`` malignant) with both classes: the split's one-line
    refusal, not a silent drop as near-duplicates.

    Mutation checked: the mixed-case guard in group_near_duplicates removed → the case is dropped, no error."""
    raw = make_raw(tmp_path / "raw")
    pair = cv2.imread(str(raw / "benign" / "image" / "PAIRA-1.png"), 0)
    _write(raw, "benign", "MIX-1", pair[::-1].copy())
    _write(raw, "malignant", "MIX-2", _noised(pair[::-1].copy(), 3))
    with pytest.raises(UserError, match="group 'MIX' has both benign and malignant"):
        split_dataset("sztus", raw, tmp_path / "o", [4])
