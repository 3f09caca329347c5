"""BUSI split on the real data: ``$HERMES_BUSI_ROOT``, else ``../shared/data/BUSI`` relative to the repository.

Skipped when the variable is unset and the default copy is absent (users do not have it, CI does); when the
variable is set, a missing copy fails the suite instead of skipping it. The reader's behaviour without real data
is tested on a synthetic BUSI layout in test_busi_reader.py."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from Code.data import SplitDataset, read_labeled_list
from Code.DataProcess.raw_readers import read_busi
from Code.DataProcess.splitting import split_dataset

from helpers import BUSI_ENV, busi_root

BUSI, BUSI_EXPLICIT = busi_root()
pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    not BUSI_EXPLICIT and not (BUSI / "Dataset_BUSI_with_GT").is_dir(),
    reason=f"BUSI not found at {BUSI} (set {BUSI_ENV} to the folder holding Dataset_BUSI_with_GT)")]


def test_busi_copy_is_where_the_environment_says():
    """With HERMES_BUSI_ROOT set, a wrong path is a failure naming the variable, not a silent skip.

    Checked by running with ``HERMES_BUSI_ROOT=/nonexistent``: this test fails with the message (and the module's
    other tests error); the variable's reading itself is guarded by test_busi_reader.py's
    ``test_busi_root_follows_the_environment``."""
    assert (BUSI / "Dataset_BUSI_with_GT").is_dir(), f"{BUSI_ENV}={BUSI} holds no Dataset_BUSI_with_GT/"


@pytest.fixture(scope="module")
def busi_split(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("busi") / "split"
    split_dataset("busi", BUSI, out, [72, 144], seed=0)
    return out


def test_reader_accepts_both_roots_and_finds_every_image():
    items = read_busi(BUSI)
    assert read_busi(BUSI / "Dataset_BUSI_with_GT") == items
    assert sum(i.label == 0 for i in items) == 437 and sum(i.label == 1 for i in items) == 210
    assert sum(len(i.masks) > 1 for i in items) == 17  # 16 benign + 1 malignant multi-lesion images
    with_normal = read_busi(BUSI, include_normal=True)
    assert len(with_normal) == 780 and {i.source_class for i in with_normal if i.label == 0} == {"benign", "normal"}


def test_counts_and_budgets(busi_split):
    record = json.loads((busi_split / "split.json").read_text())
    counts = record["counts"]
    # 437 benign + 210 malignant, less the 6 benign + 4 malignant copies with both labels (dropped)
    assert counts["test"]["benign"] == 129 and counts["test"]["malignant"] == 62  # round(0.3 · n) per class
    assert counts["train/72/labeled"]["benign"] == counts["train/72/labeled"]["malignant"] == 36
    assert counts["train/144/unlabeled"]["total"] == counts["train"]["total"] - 144
    assert counts["test"]["groups"] < counts["test"]["total"]  # near-duplicate sets are groups


def _small(path: Path) -> np.ndarray:
    image = cv2.resize(cv2.imread(str(path), cv2.IMREAD_GRAYSCALE), (32, 32), interpolation=cv2.INTER_AREA)
    return image.astype(np.float64).ravel()


def test_no_near_duplicate_pair_straddles_parts(busi_split):
    """Near-duplicates found by the test's own correlation (np.corrcoef of 32×32 images, not the code's): no pair
    is on two of test / val / train or on both sides of labeled/unlabeled; the copies with both labels are gone.

    Mutation checked: grouping off (``near_dup_threshold=None`` in the fixture) → pairs straddle and this fails."""
    record = json.loads((busi_split / "split.json").read_text())
    names = sorted(record["files"])
    where = []
    for name in names:
        entry = record["files"][name]
        labeled = [n for n in (72, 144) if (busi_split / f"train/{n}/labeled/image" / name).is_file()]
        where.append((entry["part"], tuple(labeled)))
    corr = np.corrcoef(np.stack([_small(BUSI / record["files"][n]["source"]) for n in names]))
    pairs = [(i, j) for i, j in zip(*np.nonzero(np.triu(corr, 1) >= 0.98))]
    assert len(pairs) > 100
    assert [(names[i], names[j]) for i, j in pairs if where[i] != where[j]] == []
    near = record["near_duplicates"]
    assert near["sets"] == 93 and near["images"] == 201 and len(near["dropped_conflicting"]) == 4
    dropped = {name for names_ in near["dropped_conflicting"] for name in names_}
    assert "Dataset_BUSI_with_GT/malignant/malignant (145).png" in dropped
    assert not dropped & {entry["source"] for entry in record["files"].values()}


def test_names_with_spaces_round_trip(busi_split):
    record = json.loads((busi_split / "split.json").read_text())
    for name, entry in record["files"].items():
        assert " " not in name and " " in entry["source"]
        part = busi_split / "test" if entry["part"] == "test" else None
        if part is not None:
            assert (part / "image" / name).read_bytes() == (BUSI / entry["source"]).read_bytes()
    test_lines = (busi_split / "test" / "labeled.txt").read_text().splitlines()
    assert all(len(line.split(" ")) == 3 for line in test_lines)
    assert record["files"]["benign_1.png"]["source"] == "Dataset_BUSI_with_GT/benign/benign (1).png"


def test_multi_lesion_masks_are_merged(busi_split):
    record = json.loads((busi_split / "split.json").read_text())
    multi = [(n, e) for n, e in sorted(record["files"].items()) if len(e["masks"]) > 1]
    assert len(multi) == 17
    written = grew = 0
    for name, entry in multi:
        sources = [cv2.imread(str(BUSI / m), cv2.IMREAD_GRAYSCALE) > 127 for m in entry["masks"]]
        expected = np.logical_or.reduce(sources)
        grew += int(expected.sum() > sources[0].sum())  # the extra masks add lesion pixels
        for path in busi_split.rglob(f"mask/{entry['mask']}"):  # test/ and every labeled/ holding it
            merged = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
            assert set(np.unique(merged)) <= {0, 255} and np.array_equal(merged > 0, expected), path
            written += 1
    assert written > 0 and grew > 10


def test_busi_split_loads_in_the_dataset(busi_split):
    data = SplitDataset(busi_split / "test", "eval", size=64)
    image, mask, label, name = data[0]
    assert image.shape == (1, 64, 64) and mask.shape == (64, 64) and name in {
        i for i, _, _ in read_labeled_list(busi_split / "test" / "labeled.txt")}
