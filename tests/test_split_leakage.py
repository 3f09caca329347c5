"""data_split leakage, checked independently of the code under test (issue 12, part 6).

Which source image became which output file is found by the file's bytes (images are copied byte for byte), and
the case id comes from the test's own rule (``CASE_ID``) on the source file name: neither the ``group`` nor the
``source`` field that the code writes into ``split.json`` is trusted. Parts: test, val (when present), train. Also: a case whose frames carry both
classes is refused, and the nested-budget fallback (forward fill stuck, backward fill succeeds) really runs.
"""
from __future__ import annotations

import hashlib
import re
from pathlib import Path

import cv2
import numpy as np
import pytest

from Code.data import read_labeled_list, read_unlabeled_list
from Code.DataProcess import data_split, split_plan
from Code.DataProcess.splitting import split_dataset
from Code.errors import run_cli

CASE_ID = re.compile(r"^(?P<case>.+)-(?P<frame>\d+)\.png$")  # the test's own rule: "PH-0007-2.png" → "PH-0007"


def case_of(file_name: str) -> str:
    match = CASE_ID.match(file_name)
    assert match, file_name
    return match["case"]


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def source_cases(split: Path, raw: Path, part: str, list_name: str) -> list:
    """Case ids of the images listed in ``split/part/list_name``, found through their bytes in ``raw``."""
    by_bytes = {}
    for image in raw.glob("*/image/*.png"):
        by_bytes.setdefault(_digest(image), []).append(image.name)
    assert all(len(names) == 1 for names in by_bytes.values()), "raw images must be distinct to be traced"
    listed = split / part / list_name
    names = read_labeled_list(listed) if list_name == "labeled.txt" else read_unlabeled_list(listed)
    names = [n[0] if isinstance(n, tuple) else n for n in names]
    return [case_of(by_bytes[_digest(split / part / "image" / name)][0]) for name in names]


def test_no_case_straddles_test_val_train_or_labeled_unlabeled(phantom_split, phantom_raw, split_labels):
    """Every raw image lands exactly once in test ∪ val ∪ train, and no case (by the file name, traced by bytes)
    is on two of test, val and train, or on both sides of labeled/unlabeled, for every budget.

    Mutation checked: SZ-TUS groups = one per image (``group = image.stem`` in ``raw_readers.read_sztus``) →
    frames of one case are split apart and this test fails."""
    raw_total = len(list(phantom_raw.glob("*/image/*.png")))
    test = source_cases(phantom_split, phantom_raw, "test", "labeled.txt")
    val = (source_cases(phantom_split, phantom_raw, "val", "labeled.txt")
           if (phantom_split / "val" / "labeled.txt").is_file() else [])
    assert len(set(test)) < len(test)  # the phantom has multi-frame cases, so this is a real check
    assert not set(test) & set(val)
    for n in split_labels:
        labeled = source_cases(phantom_split, phantom_raw, f"train/{n}/labeled", "labeled.txt")
        unlabeled = source_cases(phantom_split, phantom_raw, f"train/{n}/unlabeled", "unlabeled.txt")
        assert len(test) + len(val) + len(labeled) + len(unlabeled) == raw_total
        assert not (set(test) | set(val)) & (set(labeled) | set(unlabeled)), n
        assert not set(labeled) & set(unlabeled), n


def _write_raw(root: Path, cases: dict) -> Path:
    """SZ-TUS layout, ``cases`` = {case id: [class of frame 1, class of frame 2, ...]}; 8×8 images, each unique."""
    rng = np.random.default_rng(0)
    for case, classes in cases.items():
        for frame, cls in enumerate(classes, start=1):
            for sub in ("image", "mask"):
                (root / cls / sub).mkdir(parents=True, exist_ok=True)
            image = rng.integers(0, 256, size=(8, 8), dtype=np.uint8)
            mask = np.zeros((8, 8), np.uint8)
            mask[2:5, 2:6] = 255
            cv2.imwrite(str(root / cls / "image" / f"{case}-{frame}.png"), image)
            cv2.imwrite(str(root / cls / "mask" / f"{case}-{frame}.png"), mask)
    return root


def test_a_case_with_both_classes_is_refused_with_one_line(tmp_path, capsys):
    """A case whose frames sit in ``benign/`` and ``malignant/`` cannot be split per class without leaking: the
    CLI refuses it with one ``error:`` line naming the case, exit status 2, and writes nothing.

    Mutation checked: ``_check_groups(items)`` removed from ``plan_split`` → the split is written (exit 0)."""
    cases = {f"B-{k:02d}": ["benign"] for k in range(8)}
    cases.update({f"M-{k:02d}": ["malignant"] for k in range(8)})
    cases["X-01"] = ["benign", "malignant"]
    raw = _write_raw(tmp_path / "raw", cases)
    with pytest.raises(SystemExit) as exit_info:
        run_cli(data_split.main, ["--dataset", "sztus", "--root", str(raw), "--out", str(tmp_path / "out"),
                                  "--labels", "4"])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and len(err) == 1 and err[0].startswith("error: ")
    assert "'X-01'" in err[0] and "benign and malignant" in err[0]
    assert not (tmp_path / "out").exists()


def test_nested_fill_backward_fallback_by_value():
    """Sizes (1, 1, 2) with targets (2, 3): the forward rule takes the two 1s for 2 and is then stuck (only a 2
    is left for the missing 1); the backward rule takes {1, 2} for 3, then the 2 inside it.

    Mutation checked: ``nested_fill`` returning ``None`` when the forward pass is stuck (no backward pass)."""
    assert split_plan.fill_exactly([1, 1, 2], 2) == [0, 1]  # the forward pass's first choice ...
    assert split_plan.fill_exactly([2], 1) is None          # ... cannot grow by 1
    assert split_plan.nested_fill([1, 1, 2], [2, 3]) == [{2}, {0, 2}]


# Benign cases of 1, 1, 2, 3 and 3 frames, malignant single frames; with seed 12 and budgets 4 and 6 (2 then 3
# benign labeled images) the seeded order puts the two single-frame benign cases first among the train cases.
FALLBACK_CASES = {"B-01": 1, "B-02": 1, "B-03": 2, "B-04": 3, "B-05": 3}
FALLBACK_SEED = 12


def test_split_uses_the_backward_fallback_when_the_forward_fill_is_stuck(tmp_path, monkeypatch):
    """Through ``split_dataset``: the forward fill is stuck (a ``fill_exactly`` call inside ``nested_fill``
    returns None, observed by a spy), yet budgets 4 and 6 get exactly 2 and 3 labeled benign images, nested, of
    whole cases (by the test's own case-id rule) — so the N = 4 set is the 2-frame case, not two single frames.

    Mutation checked: ``nested_fill`` without its backward pass → ``split_dataset`` raises "no nested choice"."""
    cases = {case: ["benign"] * frames for case, frames in FALLBACK_CASES.items()}
    cases.update({f"M-{k:02d}": ["malignant"] for k in range(8)})
    raw = _write_raw(tmp_path / "raw", cases)
    results = []
    real_fill = split_plan.fill_exactly

    def spy(sizes, target):
        picked = real_fill(sizes, target)
        results.append(picked)
        return picked

    monkeypatch.setattr(split_plan, "fill_exactly", spy)
    split_dataset("sztus", raw, tmp_path / "out", [4, 6], seed=FALLBACK_SEED)
    assert None in results, "the forward fill was never stuck: the fallback path was not exercised"
    monkeypatch.undo()
    frames = {case: len(classes) for case, classes in cases.items()}
    previous = set()
    for n, per_class in ((4, 2), (6, 3)):
        labeled = source_cases(tmp_path / "out", raw, f"train/{n}/labeled", "labeled.txt")
        unlabeled = source_cases(tmp_path / "out", raw, f"train/{n}/unlabeled", "unlabeled.txt")
        benign = [c for c in labeled if c.startswith("B-")]
        assert len(benign) == per_class and len(labeled) == n
        assert all(benign.count(c) == frames[c] for c in set(benign))  # whole cases only
        assert not set(labeled) & set(unlabeled) and previous <= set(labeled)
        previous = set(labeled)
    first = [c for c in source_cases(tmp_path / "out", raw, "train/4/labeled", "labeled.txt") if c.startswith("B-")]
    assert len(set(first)) == 1 and frames[first[0]] == 2


def _csv_of(raw: Path, extra_rows=()) -> Path:
    """A CSV (image, mask, label) of every image of ``_write_raw``'s layout, then ``extra_rows``."""
    rows = ["image,mask,label"]
    for image in sorted(raw.glob("*/image/*.png")):
        cls = image.parent.parent.name
        rows.append(f"{cls}/image/{image.name},{cls}/mask/{image.name},{cls}")
    (raw / "list.csv").write_text("\n".join([*rows, *extra_rows]) + "\n")
    return raw / "list.csv"


def test_csv_path_spellings_and_repeated_rows_are_one_image(tmp_path):
    """Issue 21: ``img/x.png`` and ``./img/x.png`` were two images (one landed in test, one in train) and an
    identical row was copied twice. Mutations checked: without normalize_rel the './' row is a second item in
    its own group (the source count check fails); without merge_repeated_rows both repeats are copied twice."""
    cases = {f"B-{k:02d}": ["benign"] for k in range(8)}
    cases.update({f"M-{k:02d}": ["malignant"] for k in range(8)})
    raw = _write_raw(tmp_path / "raw", cases)
    csv_file = _csv_of(raw, ["./benign/image/B-03-1.png,benign//mask/B-03-1.png,benign",
                             "malignant/image/M-05-1.png,malignant/mask/M-05-1.png,malignant"])
    record = split_dataset("csv", raw, tmp_path / "out", [4], seed=0, csv_file=csv_file)
    sources = [f["source"] for f in record["files"].values()]
    assert sorted(sources) == sorted(p.relative_to(raw).as_posix() for p in raw.glob("*/image/*.png"))
    assert record["counts"]["test"]["total"] + record["counts"]["train"]["total"] == 16
    assert record["notes"] == [f"{csv_file} line 18 repeats {csv_file} line 5 ({raw / 'benign/image/B-03-1.png'}): "
                               "listed once",
                               f"{csv_file} line 19 repeats {csv_file} line 15 "
                               f"({raw / 'malignant/image/M-05-1.png'}): listed once"]


def test_csv_conflicting_rows_and_identical_images_under_two_names(tmp_path):
    """Issue 21: one image listed with two classes is refused naming both lines; a byte-identical copy under
    another name is listed once (same class and mask) or refused (another class), as --extra-unlabeled does.
    Mutations checked: without the content hash the copy is split as a second image; comparing only paths
    accepts the copy with the other class."""
    from Code.errors import UserError

    cases = {f"B-{k:02d}": ["benign"] for k in range(8)}
    cases.update({f"M-{k:02d}": ["malignant"] for k in range(8)})
    raw = _write_raw(tmp_path / "raw", cases)
    csv_file = _csv_of(raw, ["benign/image/B-02-1.png,benign/mask/B-02-1.png,malignant"])
    with pytest.raises(UserError, match=rf"{csv_file} line 4 and {csv_file} line 18 list the same image"):
        split_dataset("csv", raw, tmp_path / "out", [4], seed=0, csv_file=csv_file)
    (raw / "copies").mkdir()
    for name in ("B-02-1.png", "M-04-1.png"):
        cls = "benign" if name[0] == "B" else "malignant"
        (raw / "copies" / name).write_bytes((raw / cls / "image" / name).read_bytes())
    csv_file = _csv_of(raw, ["copies/B-02-1.png,benign/mask/B-02-1.png,benign"])
    record = split_dataset("csv", raw, tmp_path / "out2", [4], seed=0, csv_file=csv_file)
    assert "copies/B-02-1.png" not in [f["source"] for f in record["files"].values()]
    assert record["notes"] == [f"{raw / 'copies/B-02-1.png'} ({csv_file} line 18) is a copy of "
                               f"{raw / 'benign/image/B-02-1.png'} ({csv_file} line 4): listed once"]
    csv_file = _csv_of(raw, ["copies/M-04-1.png,malignant/mask/M-04-1.png,benign"])
    with pytest.raises(UserError, match=r"copies/M-04-1\.png .*line 18\) is the same image as .*M-04-1\.png "
                                        r"\(.*line 14\) but with another class"):
        split_dataset("csv", raw, tmp_path / "out3", [4], seed=0, csv_file=csv_file)
    assert not (tmp_path / "out3").exists()
