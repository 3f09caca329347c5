"""The BUSI reader and split without the real data (issue 12, part 7): the synthetic ``busi_layout`` fixture
(conftest) has names with spaces, ``_mask_1`` / ``_mask_2`` multi-lesion masks and a ``normal/`` folder."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from Code.data import read_labeled_list, read_unlabeled_list
from Code.DataProcess.raw_readers import read_busi
from Code.DataProcess.splitting import split_dataset
from Code.errors import UserError
from conftest import BUSI_LAYOUT, busi_lesion
from helpers import BUSI_ENV, REPO_ROOT, busi_root


def _expected_mask(cls, number):
    """OR of every mask file of the image, as the fixture drew them."""
    return np.logical_or.reduce([busi_lesion(cls, number, k) > 0 for k in range(BUSI_LAYOUT[cls][number])])


def test_reader_pairs_every_image_with_all_its_masks(busi_layout):
    """Every image is found once, with its masks in the order ``_mask``, ``_mask_1``, ``_mask_2``; ``normal`` only
    with ``include_normal`` (as class 0); ``--root`` may be the download folder or the folder holding it.

    Mutations checked: ``_mask_<k>`` files not matched by ``BUSI_MASK`` (they then count as images and have no
    mask: UserError); ``normal`` read without ``include_normal``."""
    items = read_busi(busi_layout)
    assert read_busi(busi_layout / "Dataset_BUSI_with_GT") == items
    found = {(i.source_class, i.image.name): i for i in items}
    expected = {(cls, f"{cls} ({n}).png") for cls in ("benign", "malignant") for n in BUSI_LAYOUT[cls]}
    assert set(found) == expected and len(items) == len(expected)
    for (cls, name), item in found.items():
        number = int(name.split("(")[1].split(")")[0])
        masks = [m.name for m in item.masks]
        assert masks == [f"{cls} ({number})_mask.png"] + [f"{cls} ({number})_mask_{k}.png"
                                                           for k in range(1, BUSI_LAYOUT[cls][number])]
        assert item.label == (cls == "malignant") and item.group == f"{cls}/{cls} ({number})"
    with_normal = read_busi(busi_layout, include_normal=True)
    normal = [i for i in with_normal if i.source_class == "normal"]
    assert len(normal) == len(BUSI_LAYOUT["normal"]) and all(i.label == 0 for i in normal)


def test_split_renames_without_spaces_and_merges_masks(busi_layout, tmp_path):
    """The split writes space-free names (``benign (10).png`` → ``benign_10.png``) whose bytes are the source's,
    single-space list lines, and masks that are the OR of all mask files of the image (checked against the
    fixture's own drawing); ``normal`` images enter class 0 with empty masks.

    Mutations checked: only the first mask file used in ``merged_mask_png`` (multi-lesion masks lose a lesion);
    ``UNSAFE`` keeping spaces and brackets (output names with spaces)."""
    out = tmp_path / "split"
    record = split_dataset("busi", busi_layout, out, [4], seed=0, include_normal=True)
    raw = busi_layout / "Dataset_BUSI_with_GT"
    parts = [out / "test", out / "train" / "4" / "labeled"]
    seen = {}
    for part in parts:
        lines = (part / "labeled.txt").read_text().splitlines()
        assert lines and all(len(line.split(" ")) == 3 for line in lines)
        for image, mask, label in read_labeled_list(part / "labeled.txt"):
            assert " " not in image and image.endswith(".png")
            cls, number = image[:-4].rsplit("_", 1)
            source = raw / cls / f"{cls} ({number}).png"
            assert (part / "image" / image).read_bytes() == source.read_bytes()
            written = cv2.imread(str(part / "mask" / mask), cv2.IMREAD_GRAYSCALE)
            assert set(np.unique(written)) <= {0, 255}
            assert np.array_equal(written > 0, _expected_mask(cls, int(number))), image
            assert label == (cls == "malignant")
            seen[image] = part
    unlabeled = read_unlabeled_list(out / "train" / "4" / "unlabeled" / "unlabeled.txt")
    assert " " not in "".join(unlabeled)
    total = sum(len(v) for v in BUSI_LAYOUT.values())
    assert len(set(seen) | set(unlabeled)) == total == len(record["files"])
    assert {"benign_10.png", "benign_2.png", "malignant_3.png", "normal_1.png"} <= set(record["files"])


def test_missing_mask_is_an_error_naming_the_image(busi_layout, tmp_path):
    """An image without any ``_mask`` file is refused with a message naming it (not skipped).

    Mutation checked: images without masks skipped (``continue``) in ``read_busi``."""
    import shutil

    copy = tmp_path / "BUSI"
    shutil.copytree(busi_layout, copy)
    (copy / "Dataset_BUSI_with_GT" / "malignant" / "malignant (4)_mask.png").unlink()
    with pytest.raises(UserError, match=r"malignant \(4\)\.png has no mask"):
        read_busi(copy)


def test_split_record_maps_new_names_to_sources(busi_layout, tmp_path):
    """``split.json`` maps every space-free name back to its source and all of its mask files.

    Mutation checked: ``"masks"`` listing only the first mask file in ``split_dataset``'s record."""
    record = split_dataset("busi", busi_layout, tmp_path / "s", [4], seed=1)
    entry = record["files"]["benign_10.png"]
    assert entry["source"] == "Dataset_BUSI_with_GT/benign/benign (10).png"
    assert entry["masks"] == ["Dataset_BUSI_with_GT/benign/benign (10)_mask.png",
                              "Dataset_BUSI_with_GT/benign/benign (10)_mask_1.png",
                              "Dataset_BUSI_with_GT/benign/benign (10)_mask_2.png"]
    assert json.loads((tmp_path / "s" / "split.json").read_text())["files"]["benign_10.png"] == entry


def test_busi_root_follows_the_environment(monkeypatch, tmp_path):
    """``HERMES_BUSI_ROOT`` points the real-data tests at a BUSI copy (given as the folder holding
    ``Dataset_BUSI_with_GT`` or as that folder); unset, the default is ``../shared/data/BUSI`` next to the repo.

    Mutations checked: the variable ignored (always the default); ``Dataset_BUSI_with_GT`` not mapped to its
    parent (the tests' ``Dataset_BUSI_with_GT/...`` source paths would then be wrong)."""
    monkeypatch.setenv(BUSI_ENV, str(tmp_path / "copy"))
    assert busi_root() == (tmp_path / "copy", True)
    monkeypatch.setenv(BUSI_ENV, str(tmp_path / "copy" / "Dataset_BUSI_with_GT"))
    assert busi_root() == (tmp_path / "copy", True)
    monkeypatch.delenv(BUSI_ENV)
    assert busi_root() == (REPO_ROOT.parent / "shared" / "data" / "BUSI", False)
