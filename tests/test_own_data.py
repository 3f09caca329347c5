"""Your own data (issue 9 §1): CSV rows without mask and label, --labels all, --extra-unlabeled, duplicates,
provenance in split.json — on the tiny phantom."""
import csv
import json
import shutil
from pathlib import Path

import cv2
import pytest

from Code.data import read_labeled_list, read_unlabeled_list
from Code.DataProcess.splitting import split_dataset
from Code.errors import UserError


def _new_image(source: Path, target: Path, flip: int) -> Path:
    """An image that exists nowhere else (a flipped phantom frame)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(target), cv2.flip(cv2.imread(str(source), cv2.IMREAD_GRAYSCALE), flip))
    return target


@pytest.fixture()
def clinic(phantom_raw, tmp_path):
    """A CSV listing the phantom's 48 labeled images plus 3 unlabeled-only rows (empty mask and label)."""
    root = tmp_path / "clinic"
    shutil.copytree(phantom_raw, root)
    rows = []
    for cls in ("benign", "malignant"):
        for image in sorted((root / cls / "image").iterdir()):
            rows.append({"image": f"{cls}/image/{image.name}", "mask": f"{cls}/mask/{image.name}", "label": cls})
    sources = sorted((root / "benign" / "image").iterdir())
    for k in range(3):
        _new_image(sources[k], root / "unlabeled" / f"u{k}.png", 1)
        rows.append({"image": f"unlabeled/u{k}.png", "mask": "", "label": ""})
    with (root / "list.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["image", "mask", "label"])
        writer.writeheader()
        writer.writerows(rows)
    return root


def test_csv_unlabeled_rows_and_extra_pool_with_duplicates(clinic, tmp_path):
    """Mutations checked: reading unlabeled rows as labeled ones fails on their empty label; without the content
    hash the duplicate extra image is listed twice; without the held-out check the copy of a test image is
    silently trained on."""
    extra = tmp_path / "hospital_b"
    sources = sorted((clinic / "malignant" / "image").iterdir())
    for k in range(2):
        _new_image(sources[k], extra / f"b{k}.png", 0)
    (extra / "sub").mkdir()
    shutil.copyfile(extra / "b0.png", extra / "sub" / "b0_again.png")
    split = split_dataset("csv", clinic, tmp_path / "split", [4], seed=0, csv_file=clinic / "list.csv",
                          extra_unlabeled=[str(extra)])
    train_image = next(name for name, f in split["files"].items() if f["part"] == "train")
    part = tmp_path / "split" / "train" / "4"
    unlabeled = read_unlabeled_list(part / "unlabeled" / "unlabeled.txt")
    pool = [n for n, f in split["files"].items() if f["part"] == "unlabeled-only"]
    assert sorted(pool) == ["b0.png", "b1.png", "u0.png", "u1.png", "u2.png"]
    assert set(pool) <= set(unlabeled) and len(unlabeled) == split["counts"]["train"]["total"] - 4 + 5
    assert all((part / "unlabeled" / "image" / n).is_file() for n in pool)
    test_and_labeled = {e[0] for e in read_labeled_list(tmp_path / "split" / "test" / "labeled.txt")}
    test_and_labeled |= {e[0] for e in read_labeled_list(part / "labeled" / "labeled.txt")}
    assert not test_and_labeled & set(pool)  # never in test or a labeled budget
    record = json.loads((tmp_path / "split" / "split.json").read_text())
    assert record["files"]["u1.png"]["origin"] == f"{clinic / 'list.csv'} line 51 (no mask, no label)"
    assert record["files"]["b1.png"]["origin"] == f"--extra-unlabeled {extra}"
    assert record["unlabeled_sources"] == {"csv rows without mask and label": 3, f"--extra-unlabeled {extra}": 2}
    assert record["unlabeled_notes"] == [f"{extra / 'sub' / 'b0_again.png'} is a copy of {extra / 'b0.png'}: "
                                         "listed once"]
    assert record["counts"]["train/4/unlabeled"]["unlabeled_only"] == 5
    assert train_image  # a train image copied into the extra pool is listed once as well:
    copy_of_train = tmp_path / "copies"
    copy_of_train.mkdir()
    source = clinic / record["files"][train_image]["source"]
    shutil.copyfile(source, copy_of_train / "again.png")
    again = split_dataset("csv", clinic, tmp_path / "split_b", [4], seed=0, csv_file=clinic / "list.csv",
                          extra_unlabeled=[str(copy_of_train)])
    assert "again.png" not in again["files"] and "is a copy of" in again["unlabeled_notes"][0]


def test_copy_of_a_test_image_is_refused(clinic, tmp_path):
    record = split_dataset("csv", clinic, tmp_path / "split", [4], seed=0, csv_file=clinic / "list.csv")
    test_name = next(name for name, f in record["files"].items() if f["part"] == "test")
    test_source = clinic / record["files"][test_name]["source"]
    extra = tmp_path / "extra"
    extra.mkdir()
    shutil.copyfile(test_source, extra / "scan.png")
    with pytest.raises(UserError, match=rf"{extra / 'scan.png'} .* is a copy of {test_source}, which is in the test"):
        split_dataset("csv", clinic, tmp_path / "split2", [4], seed=0, csv_file=clinic / "list.csv",
                      extra_unlabeled=[str(extra)])
    assert not (tmp_path / "split2").exists()  # validated before anything is written


def test_labels_all_through_the_command_line(clinic, tmp_path, run_script):
    """--labels all: every labeled train image in one budget; the unlabeled pool holds only unlabeled-only images.
    Mutation checked: without the 'all' budget data_split.py rejects the argument."""
    out = tmp_path / "split"
    result = run_script("Code/DataProcess/data_split.py", "--dataset", "csv", "--root", clinic, "--csv",
                        clinic / "list.csv", "--out", out, "--labels", "all")
    assert result.returncode == 0, result.stderr
    record = json.loads((out / "split.json").read_text())
    n = record["counts"]["train"]["total"]
    assert record["arguments"]["labels"] == [n] and (out / "train" / str(n)).is_dir()
    assert len(read_labeled_list(out / "train" / str(n) / "labeled" / "labeled.txt")) == n
    assert read_unlabeled_list(out / "train" / str(n) / "unlabeled" / "unlabeled.txt") == ["u0.png", "u1.png",
                                                                                           "u2.png"]
    assert "unlabeled-only images in every unlabeled pool: 3 from csv rows without mask and label" in result.stdout


def test_unlabeled_row_of_a_test_case_is_left_out(tmp_path):
    """Mutation checked: without the group check the frame of a test case joins the unlabeled pool."""
    from Code.DataProcess.raw_readers import RawItem
    from Code.DataProcess.unlabeled_pool import PoolImage, UnlabeledPool

    files = []
    for k in range(3):
        files.append(tmp_path / f"f{k}.png")
        files[-1].write_bytes(bytes([k]) * 10)
    items = [RawItem(files[0], (), 0, "case-1", "benign"), RawItem(files[1], (), 0, "case-2", "benign")]
    pool = UnlabeledPool.collect(items, {0: "test"}, [PoolImage(files[2], "row", "case-1")],
                                 lambda p: [x.image.name for x in p])
    assert pool.images == [] and pool.notes == [f"{files[2]} left out: its group 'case-1' is in the test part"]


def test_corrupt_unlabeled_images_are_refused_at_split_time(clinic, tmp_path, run_main, assert_one_line_error):
    """Issue 21: a corrupt --extra-unlabeled image was accepted and failed training later. Every unlabeled-only
    image is decoded at split time. Mutation checked: without check_decodes both splits are written (exit 0)."""
    from Code.DataProcess import data_split

    extra = tmp_path / "extra"
    good = _new_image(sorted((clinic / "benign" / "image").iterdir())[0], extra / "good.png", 0)
    (extra / "broken.png").write_bytes(good.read_bytes()[:60])  # a truncated PNG
    args = ["--dataset", "csv", "--root", clinic, "--csv", clinic / "list.csv", "--labels", 4, "--val-ratio", 0,
            "--near-dup-threshold", "off"]  # the near-duplicate search decodes images too: off, to test this check
    result = run_main(data_split.main, *args, "--out", tmp_path / "a", "--extra-unlabeled", extra)
    assert_one_line_error(result, f"cannot read image {extra / 'broken.png'}", f"listed by --extra-unlabeled {extra}")
    assert not (tmp_path / "a").exists()
    (clinic / "unlabeled" / "u1.png").write_bytes(b"not a png")
    result = run_main(data_split.main, *args, "--out", tmp_path / "b")
    assert_one_line_error(result, f"cannot read image {clinic / 'unlabeled' / 'u1.png'}", "list.csv line 51")
    assert not (tmp_path / "b").exists()
